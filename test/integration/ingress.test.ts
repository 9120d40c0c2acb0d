import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { overlayHostLink, vxlanDevice } from '../../src/network/overlay.js';
import { run, runOk } from '../../src/util/exec.js';
import { waitFor } from './harness.js';
import { dockerFails, dockerOk, Lab, serviceTasks, UNDERLAY_PREFIX, type LabHost } from './lab.js';

/**
 * The ingress network and the routing mesh across three lab hosts (a manager, a second manager,
 * a worker), through the docker CLI: `ingress` made with the swarm, a published port answering
 * on every host's address whichever hosts run the tasks, balanced over them; scale to 0 and
 * back; UDP; mode=host (fixed and any port); an assigned port; a conflict; service rm; a berthd killed and restarted;
 * swarm leave. The probes come from a client namespace of the test's own on the lab's underlay.
 */

const TTL = 3;
const WEB = ['busybox', 'sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'];
const CLIENT_IP = `${UNDERLAY_PREFIX}200`;
/** A static UDP server answering each datagram with its hostname (busybox's nc has no UDP). */
const UDP_ECHO = `#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a; memset(&a, 0, sizeof a); a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[1]));
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return 1;
  char h[256]; gethostname(h, sizeof h);
  for (;;) {
    char b[512]; struct sockaddr_in p; socklen_t l = sizeof p;
    if (recvfrom(s, b, sizeof b, 0, (struct sockaddr *)&p, &l) >= 0) sendto(s, h, strlen(h), 0, (struct sockaddr *)&p, l);
  }
}
`;
/** `count` UDP datagrams, each from a new connected socket (a new conntrack entry): the answers, 'timeout' for none, ECONNREFUSED for an ICMP port unreachable. */
const UDP_CLIENT = `const dgram = require('node:dgram');
const [host, port, count] = process.argv.slice(1);
(async () => {
  for (let i = 0; i < Number(count); i++) {
    const s = dgram.createSocket('udp4');
    const answer = await new Promise((r) => {
      const t = setTimeout(() => r('timeout'), 2000);
      s.on('message', (m) => { clearTimeout(t); r(m.toString()); });
      s.on('error', (e) => { clearTimeout(t); r(e.code); });
      s.connect(Number(port), host, () => s.send('x'));
    });
    s.close();
    console.log(answer);
  }
})();
`;

interface Task {
  NodeID: string; DesiredState: string;
  Status: { State: string; Err?: string; ContainerStatus?: { ContainerID: string }; PortStatus?: { Ports?: Array<{ Protocol: string; TargetPort: number; PublishedPort: number; PublishMode: string }> } };
}

describe('the ingress routing mesh across hosts', () => {
  let lab: Lab;
  let h0: LabHost, h1: LabHost, h2: LabHost;
  const client = `bt${process.pid}ic`;
  let scratch = '';

  before(async () => {
    lab = await Lab.create(3, { leaseTtlSec: TTL, seedBusybox: true });
    [h0, h1, h2] = lab.hosts as [LabHost, LabHost, LabHost];
    await runOk('ip', ['netns', 'add', client]);
    await runOk('ip', ['-n', client, '-batch', '-'], {
      input: [`link add eth0 mtu 1400 type veth peer name btic0 mtu 1400 netns ${lab.underlay}`, `addr add ${CLIENT_IP}/24 dev eth0`, 'link set eth0 up', 'link set lo up'].join('\n') + '\n',
    });
    await runOk('ip', ['-n', lab.underlay, 'link', 'set', 'btic0', 'master', 'btub0', 'up']);
    scratch = await fs.mkdtemp(join(tmpdir(), 'berth-ingress-test-'));
  });

  after(async () => {
    await run('ip', ['netns', 'del', client]);
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  const ok = dockerOk;
  const fails = dockerFails;
  const tasks = (h: LabHost, service: string) => serviceTasks<Task>(h, service);
  const waitRunning = (h: LabHost, service: string, n: number) => waitFor(async () => {
    const all = await tasks(h, service);
    const r = all.filter((t) => t.DesiredState === 'running' && t.Status.State === 'running');
    return r.length === n && all.every((t) => t.DesiredState === 'running' || ['shutdown', 'complete', 'failed', 'rejected'].includes(t.Status.State)) ? r : undefined;
  }, `${n} running tasks of ${service}`, 30_000);
  const names = (ts: Task[]) => ts.map((t) => t.Status.ContainerStatus!.ContainerID.slice(0, 12)).sort();
  /** `count` HTTP requests from the client in one shell: each line the answer, or `!CODE` (curl's exit: 7 refused, 28 timed out). */
  const http = async (addr: string, port: number, count: number): Promise<string[]> => {
    const r = await run('nsenter', [`--net=/run/netns/${client}`, 'sh', '-c', `for i in $(seq ${count}); do out=$(curl -s -m 3 http://${addr}:${port}/); c=$?; [ $c = 0 ] && echo "$out" || echo "!$c"; done`]);
    return r.stdout.split('\n').filter(Boolean);
  };
  const udp = async (addr: string, port: number, count: number): Promise<string[]> => {
    const r = await run('nsenter', [`--net=/run/netns/${client}`, process.execPath, '-e', UDP_CLIENT, addr, String(port), String(count)]);
    return r.stdout.split('\n').filter(Boolean);
  };
  /** Every host's address answers, and over many connections each of `want` answers and no other. */
  const meshAnswers = async (port: number, want: string[], probe = http) => {
    const last = new Map<string, string[]>();
    try {
      await waitFor(async () => {
        for (const h of [h0, h1, h2]) {
          const a = await probe(h.addr, port, 12);
          last.set(h.name, a);
          if (!a.every((x) => want.includes(x)) || [...new Set(a)].sort().join() !== [...want].sort().join()) return false;
        }
        return true;
      }, `port ${port} answered by ${want} on every host`, 30_000);
    } catch (e) {
      throw new Error(`${(e as Error).message}; last answers: ${JSON.stringify([...last])}`);
    }
  };
  /** Refused (not timed out: the probe reached the host and got an RST) on every host. */
  const refused = (port: number, hosts = [h0, h1, h2]) => waitFor(async () => {
    for (const h of hosts) if ((await http(h.addr, port, 1))[0] !== '!7') return false;
    return true;
  }, `port ${port} refused on ${hosts.map((h) => h.name)}`, 10_000);

  const nodeOf = new Map<string, string>();
  it('makes the ingress network with the swarm, on every node, in Docker\'s shape and rules', async () => {
    await lab.formSwarm(1);
    for (const h of [h0, h1, h2]) nodeOf.set(h.name, await ok(h, ['info', '-f', '{{.Swarm.NodeID}}']));
    for (const h of [h0, h1, h2]) {
      const ls = await ok(h, ['network', 'ls', '--format', '{{.Name}} {{.Driver}} {{.Scope}}']);
      assert.match(ls, /^ingress overlay swarm$/m, `${h.name}: ${ls}`);
      const n = JSON.parse(await ok(h, ['network', 'inspect', 'ingress']))[0];
      assert.equal(n.Ingress, true);
      assert.equal(n.Attachable, false);
      assert.equal(n.IPAM.Config[0].Subnet, '10.0.0.0/24');
    }
    await fails(h0, ['network', 'create', '-d', 'overlay', '--ingress', 'ingress2'], /ingress network \(\w+\) is already present/);
    // Each node has an address of its own on ingress.
    const sboxes = await waitFor(async () => {
      const r = await h0.host.api('GET', '/networks/ingress');
      const peers = (r.json as { Peers?: unknown[] }).Peers ?? [];
      return peers.length === 3 ? peers : undefined;
    }, 'three ingress endpoints', 15_000);
    assert.equal(sboxes.length, 3);
    // As Docker shows its ingress sandbox: a member `ingress-sbox` named ingress-endpoint.
    for (const h of [h0, h1, h2]) {
      const m = await waitFor(async () => JSON.parse(await ok(h, ['network', 'inspect', 'ingress']))[0].Containers['ingress-sbox'], `${h.name}: ingress-sbox in inspect`);
      assert.equal(m.Name, 'ingress-endpoint');
      assert.match(m.IPv4Address, /^10\.0\.0\.\d+\/24$/);
    }
  });

  let web: string[] = [];
  it('a published port answers on every host, the one without a task too, balanced over both replicas', async () => {
    await ok(h0, ['service', 'create', '--name', 'web', '--replicas', '2', '--constraint', 'node.hostname!=lab2', '--stop-grace-period', '1s', '-p', '8080:80', ...WEB]);
    web = names(await waitRunning(h0, 'web', 2));
    const svc = JSON.parse(await ok(h0, ['service', 'inspect', 'web']))[0];
    assert.deepEqual(svc.Endpoint.Ports, [{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 8080, PublishMode: 'ingress' }]);
    assert.deepEqual(svc.Spec.EndpointSpec.Ports, [{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 8080, PublishMode: 'ingress' }]);
    assert.equal(await ok(h1, ['service', 'ls', '--filter', 'name=web', '--format', '{{.Name}} {{.Ports}}']), 'web *:8080->80/tcp');
    await meshAnswers(8080, web);
    await fails(h0, ['service', 'create', '--name', 'web2', '-p', '8080:81', 'busybox', 'sleep', '1000'], /port '8080' is already in use by service 'web' \(\w+\) as an ingress port/);
    await fails(h0, ['service', 'inspect', 'web2'], 'no such service');
    const r = await h0.host.api('DELETE', '/networks/ingress');
    assert.match(r.json.message, /ingress network cannot be removed because service \w+ depends on it/);
  });

  it('scaled to 0 the port is refused at once on every host; scaled up it answers again', async () => {
    await ok(h0, ['service', 'scale', 'web=0']);
    await waitRunning(h0, 'web', 0);
    await refused(8080);
    await ok(h0, ['service', 'scale', 'web=2']);
    web = names(await waitRunning(h0, 'web', 2));
    await meshAnswers(8080, web);
  });

  it('service update --publish-add and --publish-rm: the running tasks join the mesh, the ports go', async () => {
    await ok(h0, ['service', 'update', '--publish-add', '8081:80', 'web']);
    let svc = JSON.parse(await ok(h0, ['service', 'inspect', 'web']))[0];
    assert.deepEqual(svc.Endpoint.Ports.map((p: { PublishedPort: number }) => p.PublishedPort).sort(), [8080, 8081]);
    await meshAnswers(8081, web);
    // The CLI removes by target port (its equalPort ignores the published one): both go.
    await ok(h0, ['service', 'update', '--publish-rm', '80', 'web']);
    svc = JSON.parse(await ok(h0, ['service', 'inspect', 'web']))[0];
    assert.equal(svc.Endpoint.Ports, undefined);
    await refused(8081);
    await refused(8080);
    await ok(h0, ['service', 'update', '--publish-add', '8080:80', 'web']);
    await meshAnswers(8080, web);
  });

  it('balances UDP', async () => {
    const bin = join(scratch, 'rootfs');
    await fs.mkdir(bin);
    await fs.writeFile(join(scratch, 'udpecho.c'), UDP_ECHO);
    await runOk('gcc', ['-static', '-O2', '-o', join(bin, 'udpecho'), join(scratch, 'udpecho.c')]);
    await runOk('tar', ['-cf', join(scratch, 'udpecho.tar'), '-C', bin, 'udpecho']);
    const tar = await fs.readFile(join(scratch, 'udpecho.tar'));
    for (const h of [h0, h1, h2]) assert.equal((await h.host.api('POST', '/images/create?fromSrc=-&repo=udpecho&tag=latest', tar, { 'Content-Type': 'application/x-tar' })).status, 200);
    await ok(h0, ['service', 'create', '--name', 'echo', '--replicas', '2', '--constraint', 'node.hostname!=lab0', '--publish', 'published=5353,target=5353,protocol=udp', 'udpecho', '/udpecho', '5353']);
    const echo = names(await waitRunning(h0, 'echo', 2));
    await meshAnswers(5353, echo, udp);
  });

  it('mode=host: each task\'s container publishes the port where it runs (service ps PORTS, docker port); one task per port and node, as swarmkit places', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'hw', '--replicas', '2', '--stop-grace-period', '1s', '--constraint', 'node.hostname==lab1', '--publish', 'published=9090,target=80,mode=host', ...WEB]);
    // The second replica cannot have lab1's port 9090: it waits, with swarmkit's words.
    const pending = await waitFor(async () => {
      const all = await tasks(h0, 'hw');
      const p = all.filter((t) => t.Status.State === 'pending');
      return all.filter((t) => t.Status.State === 'running').length === 1 && p.length === 1 ? p : undefined;
    }, 'one hw task running and one pending', 30_000);
    assert.equal(pending[0]!.Status.Err, 'no suitable node (scheduling constraints not satisfied on 2 nodes; host-mode port already in use on 1 node)');
    const first = await waitRunning(h0, 'hw', 1);
    const hw = names(first);
    const lab1Answers = async (want: string[]) => waitFor(async () => {
      const a = await http(h1.addr, 9090, 4);
      return [...new Set(a)].sort().join() === [...want].sort().join();
    }, `lab1 answering 9090 with ${want}`, 20_000);
    await lab1Answers(hw);
    // The task says what it bound (Docker's PortStatus), and the docker CLI shows it; the container publishes it as -p does.
    assert.deepEqual(first[0]!.Status.PortStatus, { Ports: [{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 9090, PublishMode: 'host' }] });
    const ps = (await ok(h0, ['service', 'ps', 'hw'])).split('\n');
    assert.match(ps[0]!, /ERROR\s+PORTS$/);
    assert.equal(ps.filter((l) => /\s\*:9090->80\/tcp$/.test(l)).length, 1, ps.join('\n'));
    assert.equal((await ok(h1, ['port', first[0]!.Status.ContainerStatus!.ContainerID, '80'])).split('\n')[0], '0.0.0.0:9090');
    // Counted as a host-mode connection of lab1, from its published port's element.
    const hits = [...(await h1.host.api('GET', '/metrics')).body.matchAll(/^berth_service_backend_connections_total\{service="hw",backend="([\d.]+)",via="host"\} (\d+)$/gm)];
    assert.equal(hits.length, 1, JSON.stringify(hits.map((m) => m[0])));
    assert.ok(Number(hits[0]![2]) > 0, hits[0]![0]);
    await refused(9090, [h0, h2]);
    const svc = JSON.parse(await ok(h0, ['service', 'inspect', 'hw']))[0];
    assert.deepEqual(svc.Endpoint.Ports, [{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 9090, PublishMode: 'host' }]);
    // Not the mesh's: no table of berth's holds the port (an older berth's host-port table is gone).
    for (const h of [h0, h1, h2]) assert.doesNotMatch((await h.host.inNetns('nft', ['list', 'table', 'ip', 'berth_mesh'])).stdout, /9090/);
    assert.doesNotMatch((await h1.host.inNetns('nft', ['list', 'tables'])).stdout, /berth_hostports/);
    // Let lab2 take tasks too: the pending one goes there, and each node answers with its own.
    await ok(h0, ['service', 'update', '--detach', '--constraint-rm', 'node.hostname==lab1', '--constraint-add', 'node.hostname!=lab0', 'hw']);
    const two = await waitFor(async () => {
      const r = (await tasks(h0, 'hw')).filter((t) => t.DesiredState === 'running' && t.Status.State === 'running');
      return r.length === 2 && new Set(r.map((t) => t.NodeID)).size === 2 ? r : undefined;
    }, 'hw on lab1 and lab2', 30_000);
    for (const h of [h1, h2]) {
      const mine = names(two.filter((t) => t.NodeID === nodeOf.get(h.name)));
      await waitFor(async () => (await http(h.addr, 9090, 3)).every((a) => a === mine[0]), `${h.name} answering 9090 with its own task`, 20_000);
    }
    // A berthd killed and restarted keeps its task's port (the container's, adopted as any -p).
    await h1.host.stopDaemon('SIGKILL');
    await h1.host.startDaemon();
    const onLab1 = names(two.filter((t) => t.NodeID === nodeOf.get('lab1')));
    await waitFor(async () => (await http(h1.addr, 9090, 3)).every((a) => a === onLab1[0]), 'lab1 answering 9090 after its restart', 20_000);
    // Publishing another host-mode port replaces the tasks (a container's ports are made with it), as Docker's update does.
    await ok(h0, ['service', 'update', '--detach', '--publish-add', 'published=9191,target=80,mode=host', 'hw']);
    const moved = await waitFor(async () => {
      const r = (await tasks(h0, 'hw')).filter((t) => t.DesiredState === 'running' && t.Status.State === 'running' && t.Status.PortStatus?.Ports?.length === 2);
      return r.length === 2 ? r : undefined;
    }, 'hw\'s tasks replaced, each publishing 9090 and 9191', 40_000);
    assert.equal(names(moved).filter((n) => names(two).includes(n)).length, 0);
    for (const h of [h1, h2]) {
      const mine = names(moved.filter((t) => t.NodeID === nodeOf.get(h.name)));
      await waitFor(async () => (await http(h.addr, 9191, 2)).every((a) => a === mine[0]), `${h.name} answering 9191`, 20_000);
    }
    await ok(h0, ['service', 'rm', 'hw']);
    await refused(9090, [h1, h2]);
    await refused(9191, [h1, h2]);
  });

  it('mode=host with no published port: each task binds a free port of its own node, so replicas share a node', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'hd', '--replicas', '3', '--stop-grace-period', '1s', '--constraint', 'node.hostname==lab2', '--publish', 'mode=host,target=80', ...WEB]);
    const three = await waitRunning(h0, 'hd', 3);
    // The service has no number (Docker's JSON leaves it out); each task has its own.
    assert.deepEqual(JSON.parse(await ok(h0, ['service', 'inspect', 'hd']))[0].Endpoint.Ports, [{ Protocol: 'tcp', TargetPort: 80, PublishMode: 'host' }]);
    const bound = three.map((t) => t.Status.PortStatus?.Ports?.[0]?.PublishedPort ?? 0);
    assert.equal(new Set(bound).size, 3, JSON.stringify(bound));
    assert.ok(bound.every((p) => p > 0));
    const shown = (await ok(h0, ['service', 'ps', 'hd', '--format', '{{.Ports}}'])).split('\n').sort();
    assert.deepEqual(shown, bound.map((p) => `*:${p}->80/tcp`).sort());
    for (const t of three) {
      const port = t.Status.PortStatus!.Ports![0]!.PublishedPort;
      const mine = t.Status.ContainerStatus!.ContainerID.slice(0, 12);
      await waitFor(async () => (await http(h2.addr, port, 2)).every((a) => a === mine), `lab2:${port} answering with ${mine}`, 20_000);
    }
    await ok(h0, ['service', 'rm', 'hd']);
    for (const p of bound) await refused(p, [h2]);
  });

  it('assigns a published port left out from 30000-32767; a task on a network of its own joins ingress too', async () => {
    await ok(h0, ['network', 'create', '-d', 'overlay', 'app']);
    await ok(h0, ['service', 'create', '--name', 'auto', '--replicas', '1', '--network', 'app', '--publish', 'target=80', ...WEB]);
    const auto = names(await waitRunning(h0, 'auto', 1));
    const svc = JSON.parse(await ok(h0, ['service', 'inspect', 'auto']))[0];
    const p = svc.Endpoint.Ports[0].PublishedPort as number;
    assert.ok(p >= 30000 && p <= 32767, `port ${p}`);
    assert.deepEqual(svc.Spec.EndpointSpec.Ports, [{ Protocol: 'tcp', TargetPort: 80, PublishMode: 'ingress' }]);
    await meshAnswers(p, auto);
    const [t] = await tasks(h0, 'auto');
    const host = [h0, h1, h2].find((h) => nodeOf.get(h.name) === t!.NodeID)!;
    const nets = JSON.parse(await ok(host, ['inspect', '-f', '{{json .NetworkSettings.Networks}}', t!.Status.ContainerStatus!.ContainerID]));
    assert.deepEqual(Object.keys(nets).sort(), ['app', 'ingress']);
    await ok(h0, ['service', 'rm', 'auto']);
  });

  it('a berthd killed and restarted keeps its ingress address, and the connections the mesh was carrying through it; one table, SNATing to that address', async () => {
    const before = JSON.parse(await ok(h2, ['network', 'inspect', 'ingress']))[0].Containers['ingress-sbox'].IPv4Address;
    // A connection through h2 (which runs no task) to an echo task, one line every 100 ms, held open across the restart.
    await ok(h0, ['service', 'create', '--detach', '--name', 'tcpecho', '--constraint', 'node.hostname!=lab2', '--stop-grace-period', '1s', '-p', '7000:7000', 'busybox', 'nc', '-ll', '-p', '7000', '-e', 'cat']);
    await waitRunning(h0, 'tcpecho', 1);
    const holder = `const s=require('net').connect(7000,process.argv[1]);let sent=0,got=0,end='';let t;
s.on('connect',()=>{t=setInterval(()=>{s.write('x\\n');sent++;},100);});
s.on('data',(d)=>{got+=String(d).split('\\n').length-1;});
s.on('error',(e)=>{end='error '+e.code;});s.on('close',()=>{end=end||'closed';});
process.on('SIGTERM',()=>{clearInterval(t);setTimeout(()=>{console.log(JSON.stringify({sent,got,end}));process.exit(0);},500);});`;
    let out = '';
    await waitFor(async () => {
      const r = await run('nsenter', [`--net=/run/netns/${client}`, process.execPath, '-e', `const s=require('net').connect(7000,'${h2.addr}');s.on('connect',()=>s.write('y\\n'));s.on('data',()=>{console.log('ok');process.exit(0)});s.on('error',()=>process.exit(1));setTimeout(()=>process.exit(1),1000);`]);
      return r.stdout.includes('ok') || undefined;
    }, 'the echo task through h2');
    // And new connections through h2 all along, one every 50 ms, each echoed: the kernel's table
    // balances while berthd is dead, and the restarted one must not take it away before its own.
    const prober = `const net=require('net');let ok=0;const failed=[];let stop=false;
const one=()=>new Promise((res)=>{const s=net.connect(7000,process.argv[1]);const t=setTimeout(()=>{s.destroy();failed.push('timeout');res();},2000);
s.on('connect',()=>s.write('p\\n'));s.on('data',()=>{clearTimeout(t);ok++;s.destroy();res();});s.on('error',(e)=>{clearTimeout(t);failed.push(e.code);res();});});
(async()=>{while(!stop){await one();await new Promise((r)=>setTimeout(r,50));}console.log(JSON.stringify({ok,failed}));process.exit(0);})();
process.on('SIGTERM',()=>{stop=true;});`;
    let probed = '';
    const held = spawn('nsenter', [`--net=/run/netns/${client}`, process.execPath, '-e', holder, h2.addr], { stdio: ['ignore', 'pipe', 'inherit'] });
    const probing = spawn('nsenter', [`--net=/run/netns/${client}`, process.execPath, '-e', prober, h2.addr], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = Promise.all([held, probing].map((p) => new Promise((r) => p.once('exit', r))));
    held.stdout!.on('data', (d: Buffer) => { out += d; });
    probing.stdout!.on('data', (d: Buffer) => { probed += d; });
    try {
      await sleep(500);
      await h2.host.stopDaemon('SIGKILL');
      await h2.host.startDaemon();
      await meshAnswers(8080, web);
      await sleep(1000);
    } finally {
      held.kill('SIGTERM');
      probing.kill('SIGTERM');
      await exited;
    }
    const flow = JSON.parse(out) as { sent: number; got: number; end: string };
    assert.equal(flow.end, '', `the connection through h2 ended: ${out}`);
    assert.ok(flow.sent > 10 && flow.got >= flow.sent - 2, `echoes: ${out}`);
    const probes = JSON.parse(probed) as { ok: number; failed: string[] };
    assert.deepEqual(probes.failed, [], `new connections through h2 across its berthd's restart: ${probed}`);
    assert.ok(probes.ok > 10, probed);
    await ok(h0, ['service', 'rm', 'tcpecho']);
    const tables = (await h2.host.inNetns('nft', ['list', 'tables'])).stdout;
    assert.equal(tables.split('\n').filter((l) => l === 'table ip berth_mesh').length, 1);
    const ns = await fs.readdir(join(h2.host.root, 'netns'));
    assert.equal(ns.filter((n) => n.startsWith('ingress-sbox')).length, 0, `no ingress namespace: ${ns}`);
    // The host holds its endpoint's address on the ingress bridge, with the endpoint's MAC: the
    // same endpoint as before the kill (noted in a file, taken up again).
    const net = JSON.parse(await ok(h2, ['network', 'inspect', 'ingress']))[0];
    const mine = await waitFor(async () => JSON.parse(await ok(h2, ['network', 'inspect', 'ingress']))[0].Containers['ingress-sbox'], 'the ingress endpoint');
    assert.equal(mine.IPv4Address, before);
    const [link] = JSON.parse((await h2.host.inNetns('ip', ['-j', 'addr', 'show', 'dev', overlayHostLink(net.Id)])).stdout) as Array<{ address: string; addr_info: Array<{ family: string; local: string; prefixlen: number }> }>;
    const ip = mine.IPv4Address.split('/')[0];
    assert.deepEqual(link!.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`).sort(), [`${net.IPAM.Config[0].Gateway}/24`, `${ip}/32`].sort());
    assert.equal(link!.address, mine.MacAddress);
    assert.equal(mine.MacAddress, `02:62:${h2.addr.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join(':')}`, 'the host\'s own MAC, by its data-path address');
    // The other hosts know h2's ingress address at that MAC, and by no other address.
    for (const h of [h0, h1]) {
      await waitFor(async () => {
        const neigh = (await h.host.inNetns('ip', ['neigh', 'show', 'dev', vxlanDevice(net.Id)])).stdout.split('\n').filter((l) => l.includes(mine.MacAddress));
        return neigh.length === 1 && neigh[0]!.startsWith(`${ip} `) ? true : undefined;
      }, `${h.name}: one neighbour entry of h2's ingress MAC, at ${ip}`);
    }
    // A connection through h2 (no task there) reaches a task from h2's own ingress address.
    await http(h2.addr, 8080, 1);
    const flows = (await h2.host.inNetns('conntrack', ['-L', '-p', 'tcp', '--orig-port-dst', '8080'])).stdout;
    assert.match(flows, new RegExp(`dst=${h2.addr.replace(/\./g, '\\.')} .*dport=8080 .*dst=${ip.replace(/\./g, '\\.')} `), flows);
  });

  it('300 ingress ports of one service (past etcd\'s 128 operations in a transaction) answer on every host; updated, refused to another, freed by rm', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'wide', '--stop-grace-period', '1s', '-p', '12000-12299:80', ...WEB]);
    let task = names(await waitRunning(h0, 'wide', 1));
    await meshAnswers(12299, task);
    // Every port on every host, a new connection each.
    for (const h of [h0, h1, h2]) {
      const r = await run('nsenter', [`--net=/run/netns/${client}`, 'sh', '-c', `for p in $(seq 12000 12299); do out=$(curl -s -m 3 http://${h.addr}:$p/); c=$?; [ $c = 0 ] && echo "$p $out" || echo "$p !$c"; done`]);
      const wrong = r.stdout.split('\n').filter(Boolean).filter((l) => l.split(' ')[1] !== task[0]);
      assert.equal(r.stdout.split('\n').filter(Boolean).length, 300);
      assert.deepEqual(wrong, [], `${h.name}: ports not answered by ${task[0]}`);
    }
    await fails(h0, ['service', 'create', '--name', 'wide2', '-p', '12150:80', 'busybox', 'sleep', '1000'], /port '12150' is already in use by service 'wide' \(\w+\) as an ingress port/);
    await ok(h0, ['service', 'update', '--publish-add', '12300:80', 'wide']);
    task = names(await waitRunning(h0, 'wide', 1));
    await meshAnswers(12300, task);
    await meshAnswers(12000, task);
    await ok(h0, ['service', 'rm', 'wide']);
    await refused(12000);
    await refused(12300);
    // Its claims went with it: another service takes one of its ports.
    await ok(h0, ['service', 'create', '--detach', '--name', 'wide3', '-p', '12150:80', 'busybox', 'sleep', '1000']);
    await ok(h0, ['service', 'rm', 'wide3']);
  });

  it('service rm: the port is refused on every host when it returns', async () => {
    await ok(h0, ['service', 'rm', 'web']);
    await refused(8080);
  });

  it('swarm leave takes the published ports and the ingress endpoint off the node', async () => {
    await ok(h2, ['swarm', 'leave']);
    assert.doesNotMatch((await h2.host.inNetns('nft', ['list', 'tables'])).stdout, /berth_mesh|berth_hostports/);
    const links = (await h2.host.inNetns('ip', ['-o', 'link', 'show'])).stdout;
    assert.doesNotMatch(links, /bov-|bvx-/);
    const ns = await fs.readdir(join(h2.host.root, 'netns')).catch(() => [] as string[]);
    assert.ok(!ns.includes('ingress-sbox'), `${ns}`);
    assert.deepEqual(await udp(h2.addr, 5353, 1), ['ECONNREFUSED']);
    assert.equal((await http(h2.addr, 8080, 1))[0], '!7');
  });
});
