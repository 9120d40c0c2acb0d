import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DockerEngine } from '../../bench/engines.js';
import { request } from 'node:http';
import { TestHost } from './harness.js';

/**
 * The same requests, valid and invalid, sent to berthd and to Docker 20.10 (Debian's docker.io,
 * started privately as the bench does: its own network namespace, data-root, exec-root and a unix
 * socket in a temp dir), comparing status codes and error words. Runs where dockerd is installed
 * (`scripts/bench-setup.sh` installs it); skipped with a message elsewhere.
 *
 * Each case says how close berth must be:
 *   same    status and message equal
 *   status  status equal (the words are Go's decoder's or carry ids)
 *   berth   a deliberate difference, written down in docs/compatibility.md: berth's answer is
 *           asserted and Docker's is only printed (e.g. Docker's 500 for a client's mistake,
 *           answered 400 with the same words by berth)
 *   pending a difference only the network controller can remove; printed, not asserted, and
 *           listed in docs/compatibility.md
 */
type Mode = 'same' | 'status' | 'berth' | 'pending';
interface Case { name: string; method: string; path: string; body?: unknown; mode: Mode; berth?: number; setup?: boolean }

const NET = (body: Record<string, unknown>) => ({ CheckDuplicate: true, ...body });

const CASES: Case[] = [
  // system
  { name: 'ping', method: 'GET', path: '/_ping', mode: 'same' },
  { name: 'bad filter key', method: 'GET', path: '/containers/json?filters={"bogus":["x"]}', mode: 'same' },
  { name: 'filters not JSON', method: 'GET', path: '/containers/json?filters=x', mode: 'berth', berth: 400 },
  // swarm while not in a swarm
  { name: 'swarm leave', method: 'POST', path: '/swarm/leave', mode: 'same' },
  { name: 'swarm leave force', method: 'POST', path: '/swarm/leave?force=1', mode: 'same' },
  { name: 'swarm inspect', method: 'GET', path: '/swarm', mode: 'same' },
  { name: 'swarm unlockkey', method: 'GET', path: '/swarm/unlockkey', mode: 'same' },
  { name: 'swarm update, no version', method: 'POST', path: '/swarm/update', body: {}, mode: 'same' },
  { name: 'swarm unlock', method: 'POST', path: '/swarm/unlock', body: {}, mode: 'same' },
  { name: 'nodes', method: 'GET', path: '/nodes', mode: 'same' },
  { name: 'node', method: 'GET', path: '/nodes/x', mode: 'same' },
  { name: 'services', method: 'GET', path: '/services', mode: 'same' },
  { name: 'service create', method: 'POST', path: '/services/create', body: {}, mode: 'same' },
  { name: 'service create, no body', method: 'POST', path: '/services/create', mode: 'same' },
  { name: 'service delete', method: 'DELETE', path: '/services/x', mode: 'same' },
  { name: 'service logs', method: 'GET', path: '/services/x/logs?stdout=1', mode: 'same' },
  { name: 'tasks', method: 'GET', path: '/tasks', mode: 'same' },
  { name: 'secrets', method: 'GET', path: '/secrets', mode: 'same' },
  { name: 'secret update, no version', method: 'POST', path: '/secrets/x/update', body: {}, mode: 'same' },
  { name: 'configs', method: 'GET', path: '/configs', mode: 'same' },
  { name: 'plugins', method: 'GET', path: '/plugins', mode: 'same' },
  // networks
  { name: 'network create', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn1' }), mode: 'status', setup: true },
  { name: 'network create, duplicate, CheckDuplicate', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn1' }), mode: 'same' },
  { name: 'network create, duplicate, no CheckDuplicate', method: 'POST', path: '/networks/create', body: { Name: 'dn1' }, mode: 'same' },
  { name: 'network name with a space', method: 'POST', path: '/networks/create', body: NET({ Name: 'd n' }), mode: 'same' },
  { name: 'network name blank', method: 'POST', path: '/networks/create', body: NET({ Name: ' ' }), mode: 'berth', berth: 400 },
  { name: 'IPAM.Config a string', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn2', IPAM: { Config: 'x' } }), mode: 'same' },
  { name: 'Internal a string', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn2', Internal: 'yes' }), mode: 'same' },
  { name: 'subnet not a CIDR', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn2', IPAM: { Config: [{ Subnet: 'x' }] } }), mode: 'berth', berth: 400 },
  { name: 'gateway without subnet', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn2', IPAM: { Config: [{ Gateway: '172.30.0.1' }] } }), mode: 'berth', berth: 400 },
  { name: 'gateway not an address', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn2', IPAM: { Config: [{ Subnet: '172.30.0.0/16', Gateway: 'x' }] } }), mode: 'berth', berth: 400 },
  { name: 'gateway = network address', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn2', IPAM: { Config: [{ Subnet: '172.30.0.0/16', Gateway: '172.30.0.0' }] } }), mode: 'berth', berth: 400 },
  { name: 'gateway outside the subnet', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn2', IPAM: { Config: [{ Subnet: '172.30.0.0/16', Gateway: '172.31.0.1' }] } }), mode: 'berth', berth: 400 },
  { name: 'loopback subnet', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn3', IPAM: { Config: [{ Subnet: '127.0.0.0/8' }] } }), mode: 'berth', berth: 400 },
  { name: 'bridge name with a space', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn4', Options: { 'com.docker.network.bridge.name': 'br x' } }), mode: 'berth', berth: 400 },
  { name: 'IPv6 subnet without EnableIPv6', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn5', IPAM: { Config: [{ Subnet: '172.29.0.0/16' }, { Subnet: 'fd00:5::/64' }] } }), mode: 'same' },
  { name: 'IPv6 subnet with host bits', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn6', EnableIPv6: true, IPAM: { Config: [{ Subnet: 'fd00:6::5/64' }] } }), mode: 'same' },
  { name: 'network inspect, missing', method: 'GET', path: '/networks/nosuchnet', mode: 'same' },
  { name: 'network delete, missing', method: 'DELETE', path: '/networks/nosuchnet', mode: 'same' },
  { name: 'network delete, predefined', method: 'DELETE', path: '/networks/bridge', mode: 'status' },
  { name: 'network create, no body', method: 'POST', path: '/networks/create', mode: 'same' },
  // containers
  { name: 'create, Memory -1', method: 'POST', path: '/containers/create', body: { Image: 'busybox', HostConfig: { Memory: -1 } }, mode: 'same' },
  { name: 'create, Memory 1e30', method: 'POST', path: '/containers/create', body: { Image: 'busybox', HostConfig: { Memory: 1e30 } }, mode: 'berth', berth: 400 },
  { name: 'create, PortBindings value a string', method: 'POST', path: '/containers/create', body: { Image: 'busybox', HostConfig: { PortBindings: { '80/tcp': 'x' } } }, mode: 'berth', berth: 400 },
  { name: 'create, HostPort not a port', method: 'POST', path: '/containers/create', body: { Image: 'busybox', HostConfig: { PortBindings: { '80/tcp': [{ HostPort: 'x' }] } } }, mode: 'same' },
  { name: 'create, Env a string', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Env: 'A=1' }, mode: 'berth', berth: 400 },
  { name: 'create, image missing', method: 'POST', path: '/containers/create', body: { Image: 'nosuchimage' }, mode: 'same' },
  { name: 'create, bad name', method: 'POST', path: '/containers/create?name=a/b', body: { Image: 'busybox', Cmd: ['true'] }, mode: 'same' },
  { name: 'create, no body', method: 'POST', path: '/containers/create', mode: 'berth', berth: 400 },
  { name: 'create, no command', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Entrypoint: [], Cmd: [] }, mode: 'status' },
  { name: 'create, Cmd a string', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Cmd: 'true' }, mode: 'status', setup: true },
  { name: 'exec, no body', method: 'POST', path: '/containers/nosuchc/exec', mode: 'status' },
  { name: 'create, bad restart policy', method: 'POST', path: '/containers/create', body: { Image: 'busybox', HostConfig: { RestartPolicy: { Name: 'bogus' } } }, mode: 'same' },
  { name: 'create, reservation under 6MB', method: 'POST', path: '/containers/create', body: { Image: 'busybox', HostConfig: { MemoryReservation: 1024 } }, mode: 'same' },
  { name: 'inspect, missing', method: 'GET', path: '/containers/nosuchc/json', mode: 'same' },
  { name: 'start, missing', method: 'POST', path: '/containers/nosuchc/start', mode: 'same' },
  { name: 'delete, missing', method: 'DELETE', path: '/containers/nosuchc', mode: 'same' },
  { name: 'exec, missing container', method: 'POST', path: '/containers/nosuchc/exec', body: { Cmd: ['true'] }, mode: 'same' },
  { name: 'exec inspect, missing', method: 'GET', path: '/exec/nosuchexec/json', mode: 'same' },
  // volumes
  { name: 'volume name of one character', method: 'POST', path: '/volumes/create', body: { Name: 'v' }, mode: 'same' },
  { name: 'volume name with a space', method: 'POST', path: '/volumes/create', body: { Name: 'a b' }, mode: 'same' },
  { name: 'volume name of 10k characters', method: 'POST', path: '/volumes/create', body: { Name: 'v'.repeat(10_000) }, mode: 'berth', berth: 400 },
  { name: 'volume create, no body', method: 'POST', path: '/volumes/create', mode: 'status', setup: true },
  { name: 'volume inspect, missing', method: 'GET', path: '/volumes/nosuchvol', mode: 'same' },
  { name: 'volume delete, missing', method: 'DELETE', path: '/volumes/nosuchvol', mode: 'same' },
  // images
  { name: 'image inspect, missing', method: 'GET', path: '/images/nosuchimage/json', mode: 'same' },
  { name: 'image delete, missing', method: 'DELETE', path: '/images/nosuchimage', mode: 'same' },
  { name: 'image tag, uppercase repo', method: 'POST', path: '/images/busybox/tag?repo=Bad', mode: 'berth', berth: 400 },
];

/**
 * Cases against objects made first on both engines under the same names: a running container
 * `drun` (on network `dnet`, with volume `dvol`), a created one `dstop`, and an exec of `drun`'s.
 * Container and exec ids in messages are replaced by <id> before comparing.
 */
const OBJECT_CASES: Case[] = [
  // containers
  { name: 'list, limit not a number', method: 'GET', path: '/containers/json?limit=abc', mode: 'berth', berth: 400 },
  { name: 'list, bad status filter', method: 'GET', path: '/containers/json?filters={"status":["bogus"]}', mode: 'same' },
  { name: 'stop, t not a number', method: 'POST', path: '/containers/drun/stop?t=abc', mode: 'berth', berth: 400 },
  { name: 'kill, bad signal', method: 'POST', path: '/containers/drun/kill?signal=BOGUS', mode: 'same' },
  { name: 'kill, not running', method: 'POST', path: '/containers/dstop/kill', mode: 'same' },
  { name: 'wait, bad condition', method: 'POST', path: '/containers/drun/wait?condition=bogus', mode: 'berth', berth: 400 },
  { name: 'resize, h not a number', method: 'POST', path: '/containers/drun/resize?h=abc&w=1', mode: 'same' },
  { name: 'logs, no stream chosen', method: 'GET', path: '/containers/drun/logs', mode: 'same' },
  { name: 'logs, since not a time', method: 'GET', path: '/containers/drun/logs?stdout=1&since=abc', mode: 'berth', berth: 400 },
  { name: 'rename, empty name', method: 'POST', path: '/containers/dstop/rename?name=', mode: 'same' },
  { name: 'rename, bad name', method: 'POST', path: '/containers/dstop/rename?name=a/b', mode: 'same' },
  { name: 'rename, taken name', method: 'POST', path: '/containers/dstop/rename?name=drun', mode: 'same' },
  { name: 'delete, running', method: 'DELETE', path: '/containers/drun', mode: 'same' },
  { name: 'start, running', method: 'POST', path: '/containers/drun/start', mode: 'same' },
  { name: 'stop, not running', method: 'POST', path: '/containers/dstop/stop', mode: 'same' },
  { name: 'pause, not running', method: 'POST', path: '/containers/dstop/pause', mode: 'same' },
  { name: 'unpause, not paused', method: 'POST', path: '/containers/drun/unpause', mode: 'berth', berth: 409 },
  { name: 'exec, not running', method: 'POST', path: '/containers/dstop/exec', body: { Cmd: ['true'] }, mode: 'same' },
  { name: 'exec, no command', method: 'POST', path: '/containers/drun/exec', body: { Cmd: [] }, mode: 'same' },
  { name: 'archive head, missing path', method: 'HEAD', path: '/containers/drun/archive?path=/nonexistent', mode: 'status' },
  { name: 'archive get, no path', method: 'GET', path: '/containers/drun/archive', mode: 'status' },
  { name: 'archive get, missing path', method: 'GET', path: '/containers/drun/archive?path=/nonexistent', mode: 'same' },
  { name: 'prune, bad filter', method: 'POST', path: '/containers/prune?filters={"bogus":["x"]}', mode: 'same' },
  { name: 'create, missing network', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Cmd: ['true'], HostConfig: { NetworkMode: 'nosuchnet' } }, mode: 'berth', berth: 404 },
  { name: 'create, AutoRemove with restart', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Cmd: ['true'], HostConfig: { AutoRemove: true, RestartPolicy: { Name: 'always' } } }, mode: 'same' },
  { name: 'create, negative retry count', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Cmd: ['true'], HostConfig: { RestartPolicy: { Name: 'on-failure', MaximumRetryCount: -1 } } }, mode: 'same' },
  { name: 'create, retry count with always', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Cmd: ['true'], HostConfig: { RestartPolicy: { Name: 'always', MaximumRetryCount: 3 } } }, mode: 'same' },
  { name: 'create, bind source missing (Mounts)', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Cmd: ['true'], HostConfig: { Mounts: [{ Type: 'bind', Source: '/nonexistent-berth', Target: '/x' }] } }, mode: 'same' },
  { name: 'create, bad bind spec', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Cmd: ['true'], HostConfig: { Binds: ['a'] } }, mode: 'berth', berth: 400 },
  { name: 'create, healthcheck interval too short', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Cmd: ['true'], Healthcheck: { Test: ['CMD', 'true'], Interval: 10 } }, mode: 'same' },
  { name: 'create, container network of a missing one', method: 'POST', path: '/containers/create', body: { Image: 'busybox', Cmd: ['true'], HostConfig: { NetworkMode: 'container:nosuchc' } }, mode: 'berth', berth: 404 },
  { name: 'create, name taken', method: 'POST', path: '/containers/create?name=drun', body: { Image: 'busybox', Cmd: ['true'] }, mode: 'same' },
  // networks
  { name: 'connect, missing container', method: 'POST', path: '/networks/dnet/connect', body: { Container: 'nosuchc' }, mode: 'same' },
  { name: 'connect, missing network', method: 'POST', path: '/networks/nosuchnet/connect', body: { Container: 'drun' }, mode: 'same' },
  { name: 'connect, already connected', method: 'POST', path: '/networks/dnet/connect', body: { Container: 'drun' }, mode: 'same' },
  { name: 'disconnect, not connected', method: 'POST', path: '/networks/dnet/disconnect', body: { Container: 'dstop' }, mode: 'berth', berth: 403 },
  { name: 'network delete, in use', method: 'DELETE', path: '/networks/dnet', mode: 'same' },
  { name: 'network list, bad filter', method: 'GET', path: '/networks?filters={"bogus":["x"]}', mode: 'same' },
  { name: 'network list, bad type', method: 'GET', path: '/networks?filters={"type":["bad"]}', mode: 'berth', berth: 400 },
  { name: 'network prune, bad filter', method: 'POST', path: '/networks/prune?filters={"bogus":["x"]}', mode: 'same' },
  { name: 'network create, unknown driver', method: 'POST', path: '/networks/create', body: { Name: 'dn11', Driver: 'bogus', CheckDuplicate: true }, mode: 'berth', berth: 404 },
  { name: 'network create, host driver', method: 'POST', path: '/networks/create', body: { Name: 'dn12', Driver: 'host', CheckDuplicate: true }, mode: 'same' },
  { name: 'network create, predefined name', method: 'POST', path: '/networks/create', body: { Name: 'bridge', CheckDuplicate: true }, mode: 'same' },
  { name: 'network create, unknown IPAM driver', method: 'POST', path: '/networks/create', body: { Name: 'dn13', CheckDuplicate: true, IPAM: { Driver: 'bogus' } }, mode: 'berth', berth: 404 },
  { name: 'network create, MTU not a number', method: 'POST', path: '/networks/create', body: { Name: 'dn14', CheckDuplicate: true, Options: { 'com.docker.network.driver.mtu': 'abc' } }, mode: 'berth', berth: 400 },
  { name: 'network create, overlapping subnet', method: 'POST', path: '/networks/create', body: { Name: 'dn15', CheckDuplicate: true, IPAM: { Config: [{ Subnet: '172.25.0.0/24' }] } }, mode: 'same' },
  { name: 'network create, ip range outside', method: 'POST', path: '/networks/create', body: { Name: 'dn16', CheckDuplicate: true, IPAM: { Config: [{ Subnet: '172.26.0.0/24', IPRange: '172.27.0.0/25' }] } }, mode: 'berth', berth: 400 },
  { name: 'network create, aux address outside', method: 'POST', path: '/networks/create', body: { Name: 'dn17', CheckDuplicate: true, IPAM: { Config: [{ Subnet: '172.23.9.0/24', AuxiliaryAddresses: { a: '10.9.9.9' } }] } }, mode: 'same' },
  // volumes
  { name: 'volume create, unknown driver', method: 'POST', path: '/volumes/create', body: { Name: 'dv9', Driver: 'bogus' }, mode: 'berth', berth: 404 },
  { name: 'volume delete, in use', method: 'DELETE', path: '/volumes/dvol', mode: 'same' },
  { name: 'volume list, bad filter', method: 'GET', path: '/volumes?filters={"bogus":["x"]}', mode: 'same' },
  { name: 'volume prune, bad filter', method: 'POST', path: '/volumes/prune?filters={"bogus":["x"]}', mode: 'same' },
  // images
  { name: 'image list, bad filter', method: 'GET', path: '/images/json?filters={"bogus":["x"]}', mode: 'same' },
  { name: 'image create, no parameters', method: 'POST', path: '/images/create', mode: 'berth', berth: 400 },
  { name: 'image tag, no repo', method: 'POST', path: '/images/busybox/tag', mode: 'berth', berth: 400 },
  { name: 'image tag, missing image', method: 'POST', path: '/images/nosuchimage/tag?repo=x', mode: 'same' },
  { name: 'image history, missing', method: 'GET', path: '/images/nosuchimage/history', mode: 'same' },
  { name: 'image delete, in use', method: 'DELETE', path: '/images/busybox', mode: 'status' },
  { name: 'image prune, bad filter', method: 'POST', path: '/images/prune?filters={"bogus":["x"]}', mode: 'same' },
  { name: 'commit, missing container', method: 'POST', path: '/commit?container=nosuchc', mode: 'same' },
  // exec
  { name: 'exec start, missing', method: 'POST', path: '/exec/nosuchexec/start', body: { Detach: true }, mode: 'same' },
  { name: 'exec resize, missing', method: 'POST', path: '/exec/nosuchexec/resize?h=1&w=1', mode: 'same' },
  // system
  { name: 'events, since not a time', method: 'GET', path: '/events?since=abc', mode: 'berth', berth: 400 },
  { name: 'events, bad filter', method: 'GET', path: '/events?filters={"bogus":["x"]}', mode: 'berth', berth: 400 },
  { name: 'unknown path', method: 'GET', path: '/nosuchpath', mode: 'same' },
  { name: 'method not allowed', method: 'DELETE', path: '/version', mode: 'same' },
  { name: 'system df', method: 'GET', path: '/system/df', mode: 'status' },
  { name: 'info', method: 'GET', path: '/info', mode: 'status' },
];

/** Makes the objects OBJECT_CASES refer to, the same on both engines. */
async function makeObjects(api: (m: string, p: string, b?: unknown) => Promise<{ status: number; body: string; json?: any }>): Promise<void> {
  const ok = async (m: string, p: string, b?: unknown) => {
    const r = await api(m, p, b);
    if (r.status >= 300) throw new Error(`${m} ${p}: ${r.status} ${r.body}`);
    return r.json;
  };
  await ok('POST', '/networks/create', { Name: 'dnet', CheckDuplicate: true, IPAM: { Config: [{ Subnet: '172.25.0.0/24' }] } });
  await ok('POST', '/volumes/create', { Name: 'dvol' });
  await ok('POST', '/containers/create?name=drun', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'dnet', Binds: ['dvol:/data'] } });
  await ok('POST', '/containers/drun/start');
  await ok('POST', '/containers/create?name=dstop', { Image: 'busybox', Cmd: ['true'], HostConfig: { Binds: ['dvol:/data'] } });
}

/**
 * One request on a connection of its own (no agent, so a request one engine never answers cannot
 * hold up the next), given up after 5 s without data.
 */
function ask1(socket: string, c: Case): Promise<{ status: number; body: string; json?: any }> {
  return new Promise((resolve, reject) => {
    const data = c.body === undefined ? undefined : Buffer.from(JSON.stringify(c.body));
    const req = request({
      socketPath: socket, method: c.method, path: `/v1.41${c.path}`, agent: false, timeout: 5000,
      headers: data ? { 'Content-Type': 'application/json', 'Content-Length': String(data.length) } : {},
    }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => {
        let json: unknown;
        try { json = body ? JSON.parse(body) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, body, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(data);
  });
}

function dockerdInstalled(): boolean {
  try { execFileSync('dockerd', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

describe('differential: berthd and Docker 20.10 answer the same requests alike', () => {
  const skip = dockerdInstalled() ? false : 'dockerd (Debian\'s docker.io 20.10) is not installed: scripts/bench-setup.sh installs it; this comparison is skipped';
  let berth: TestHost;
  let docker: DockerEngine;
  let dir: string;
  before(async () => {
    if (skip) return;
    berth = await TestHost.create();
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-diff-'));
    docker = new DockerEngine('docker', dir);
    await docker.start();
  });
  after(async () => {
    if (skip) return;
    const leaks = [...await docker.stop(), ...await berth.destroy()];
    assert.deepEqual(leaks, []);
  });

  async function compare(cases: Case[], ids: string[] = []): Promise<void> {
    const report: string[] = [];
    const failures: string[] = [];
    // Ids differ between the engines: compare messages with every known id (and its 12-character form) as <id>.
    const norm = (t: string) => ids.reduce((acc, id) => acc.split(id).join('<id>').split(id.slice(0, 12)).join('<id>'), t);
    for (const c of cases) {
      // A request one engine answers with an endless stream (or not at all) must not stall the run.
      const ask = (socket: string) => ask1(socket, c)
        .catch((e: Error) => ({ status: -1, body: `no answer: ${e.message}`, json: undefined }));
      const [b, d] = await Promise.all([ask(berth.socket), ask(docker.socket)]);
      const msg = (r: { json?: { message?: string } | undefined; body: string }) => norm(r.json?.message ?? (r.body.length < 80 ? r.body.trim() : `${r.body.slice(0, 80)}…`));
      const short = (s: string) => (s.length > 140 ? `${s.slice(0, 140)}…` : s);
      report.push(`${c.mode.padEnd(7)} ${c.name}: berth ${b.status} ${short(msg(b))} | docker ${d.status} ${short(msg(d))}`);
      const bad = (why: string) => failures.push(`${c.name}: ${why}\n  berth  ${b.status} ${short(msg(b))}\n  docker ${d.status} ${short(msg(d))}`);
      if (c.mode === 'same' || c.mode === 'status') {
        if (b.status !== d.status) bad('status differs');
        else if (c.mode === 'same' && b.status >= 400 && msg(b) !== msg(d)) bad('message differs');
      } else if (c.mode === 'berth' && b.status !== c.berth) bad(`berth should answer ${c.berth}`);
    }
    console.log(report.join('\n'));
    assert.deepEqual(failures, [], failures.join('\n'));
  }

  it('answers each case as Docker 20.10 does (or as docs/compatibility.md says it differs)', { skip, timeout: 120_000 }, async () => {
    await compare(CASES);
  });

  it('answers the same about existing containers, networks, volumes, images and execs', { skip, timeout: 120_000 }, async () => {
    await makeObjects((m, p, b) => berth.api(m, `/v1.41${p}`, b));
    await makeObjects((m, p, b) => docker.api(m, p, b));
    const ids: string[] = [];
    for (const api of [(p: string) => berth.api('GET', `/v1.41${p}`), (p: string) => docker.api('GET', p)]) {
      for (const name of ['drun', 'dstop']) ids.push((await api(`/containers/${name}/json`)).json.Id);
      ids.push((await api('/networks/dnet')).json.Id);
    }
    await compare(OBJECT_CASES, ids);
  });
});
