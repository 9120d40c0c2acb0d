import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DockerEngine } from '../../bench/engines.js';
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
  { name: 'network create, duplicate, no CheckDuplicate', method: 'POST', path: '/networks/create', body: { Name: 'dn1' }, mode: 'pending' },
  { name: 'network name with a space', method: 'POST', path: '/networks/create', body: NET({ Name: 'd n' }), mode: 'pending' },
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
  { name: 'IPv6 subnet without EnableIPv6', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn5', IPAM: { Config: [{ Subnet: '172.29.0.0/16' }, { Subnet: 'fd00:5::/64' }] } }), mode: 'pending' },
  { name: 'IPv6 subnet with host bits', method: 'POST', path: '/networks/create', body: NET({ Name: 'dn6', EnableIPv6: true, IPAM: { Config: [{ Subnet: 'fd00:6::5/64' }] } }), mode: 'pending' },
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
  { name: 'create, image missing', method: 'POST', path: '/containers/create', body: { Image: 'nosuchimage' }, mode: 'pending' },
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

  it('answers each case as Docker 20.10 does (or as docs/compatibility.md says it differs)', { skip, timeout: 120_000 }, async () => {
    const report: string[] = [];
    const failures: string[] = [];
    for (const c of CASES) {
      const b = await berth.api(c.method, `/v1.41${c.path}`, c.body);
      const d = await docker.api(c.method, c.path, c.body);
      const msg = (r: { json?: { message?: string }; body: string }) => (r.json?.message ?? (r.body.length < 80 ? r.body.trim() : `${r.body.slice(0, 80)}…`));
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
  });
});
