import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DockerEngine } from '../../bench/engines.js';
import { FakePlugin, type Recorded } from './fakeplugin.js';
import { TestHost } from './harness.js';

/**
 * Docker's remote network and IPAM plugins: a fake plugin (fakeplugin.ts) on a unix socket in a
 * temp directory, which berthd finds through --plugin-dir, never /run/docker. Where Docker 20.10's
 * dockerd is installed, the same plugin is run against it too (in a mount namespace of its own
 * whose /etc/docker is a temp directory holding the plugin's spec file) and berth must send the
 * same calls, in the same order, with the same payload keys.
 */

type Cli = (args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>;

/** The same user story on either engine: a plugin network with the plugin's IPAM, a container on it, and back. */
async function story(cli: Cli, plugin: string): Promise<void> {
  const ok = async (args: string[]) => {
    const r = await cli(args);
    if (r.code !== 0) throw new Error(`docker ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  await ok(['network', 'create', '-d', plugin, '--ipam-driver', plugin, '--ipam-opt', 'color=blue', '-o', 'flavour=plain', 'pnet']);
  await ok(['run', '-d', '--name', 'pc1', '--network', 'pnet', 'busybox', 'sleep', '300']);
  await ok(['rm', '-f', 'pc1']);
  await ok(['network', 'rm', 'pnet']);
}

/** A call's shape: its method and its payload's keys (and its Options' keys), ids and values aside. */
function shape(c: Recorded): string {
  const b = c.body && typeof c.body === 'object' ? c.body : {};
  const keys = Object.keys(b).sort().join(',');
  const opts = b.Options && typeof b.Options === 'object' ? `{${Object.keys(b.Options).sort().join(',')}}` : '';
  return `${c.method}(${keys})${opts}`;
}

/** A call with its ids and the sandbox path replaced, to compare values across engines. */
function normalised(c: Recorded): Recorded {
  const ids = new Set(['NetworkID', 'EndpointID', 'SandboxKey']);
  // Keys sorted: Go's maps marshal in key order, and JSON objects are unordered anyway.
  const sorted = (_k: string, v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => x.localeCompare(y))) : v);
  return { method: c.method, body: JSON.parse(JSON.stringify(JSON.parse(JSON.stringify(c.body ?? null, (k, v) => (ids.has(k) ? '<id>' : v))), sorted)) };
}

function dockerdInstalled(): boolean {
  try { execFileSync('dockerd', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

/** dockerd in a private mount namespace whose /etc/docker is `etcDocker`: its plugin discovery sees only the test's spec. */
class PrivateDocker extends DockerEngine {
  constructor(dir: string, private readonly etcDocker: string) { super('docker', dir); }
  protected override spawnDaemon(cmd: string, args: string[]): void {
    super.spawnDaemon('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/docker && exec "$@"', this.etcDocker, cmd, ...args]);
  }
}

describe('plugins: berthd sends the calls Docker 20.10 sends', () => {
  const skip = !dockerdInstalled() ? 'dockerd (Debian\'s docker.io 20.10) is not installed: scripts/bench-setup.sh installs it; this comparison is skipped'
    : !existsSync('/etc/docker') ? '/etc/docker is missing: the private dockerd binds its spec directory over it' : false;
  let dir: string;
  let berth: TestHost;
  let docker: PrivateDocker;
  let forBerth: FakePlugin;
  let forDocker: FakePlugin;
  before(async () => {
    if (skip) return;
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-plugins-diff-'));
    await fs.mkdir(join(dir, 'berth-plugins'));
    await fs.mkdir(join(dir, 'etc-docker', 'plugins'), { recursive: true });
    berth = await TestHost.create({ daemonArgs: ['--plugin-dir', join(dir, 'berth-plugins'), '--plugin-spec-dir', join(dir, 'none')] });
    forBerth = new FakePlugin(join(dir, 'berth-plugins'), 'fake', berth.netns);
    await forBerth.start();
    docker = new PrivateDocker(join(dir, 'docker'), join(dir, 'etc-docker'));
    await fs.mkdir(join(dir, 'docker'));
    forDocker = new FakePlugin(dir, 'fake', docker.netns);
    await fs.writeFile(join(dir, 'etc-docker', 'plugins', 'fake.spec'), `unix://${forDocker.socket}\n`);
    await docker.start();
    await forDocker.start();
  });
  after(async () => {
    if (skip) return;
    const leaks = [...await docker.stop(), ...await berth.destroy()];
    await forBerth.stop();
    await forDocker.stop();
    await fs.rm(dir, { recursive: true, force: true });
    assert.deepEqual(leaks, []);
  });

  it('create, run, rm and network rm: the same calls in the same order with the same payload keys', { skip, timeout: 180_000 }, async () => {
    await story((a) => docker.cli(a), 'fake');
    await story((a) => berth.docker(a), 'fake');
    const d = forDocker.calls.map(shape);
    const b = forBerth.calls.map(shape);
    console.log(`docker:\n  ${d.join('\n  ')}\nberth:\n  ${b.join('\n  ')}`);
    assert.deepEqual(b, d);
    // Beyond the keys: the same values, once ids and paths are set aside (both plugins hand out the same addresses).
    const nb = forBerth.calls.map(normalised);
    const nd = forDocker.calls.map(normalised);
    const differ = nd.flatMap((c, i) => (JSON.stringify(c) === JSON.stringify(nb[i]) ? [] : [`docker ${JSON.stringify(c)}\nberth  ${JSON.stringify(nb[i])}`]));
    assert.deepEqual(differ, [], differ.join('\n'));
  });
});
