import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run, runOk } from '../../src/util/exec.js';

/**
 * A list larger than gRPC's default message limit. A cluster store watch whose server stops answering (a host cut off, an etcd that hangs): its
 * stop must still end. etcd3's own cancel waits for the server's answer forever, and a relist
 * stuck on it left a host's view of the swarm frozen (services.test: a removed stack network
 * stayed listed on one host). Real etcd, frozen with SIGSTOP, in a namespace of the test's own.
 */
describe('cluster store against a real etcd: a large list, and a watch on a store that stopped answering', () => {
  const ns = `btsw${randomBytes(3).toString('hex')}`;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-storewatch-'));
    await runOk('ip', ['netns', 'add', ns]);
    await runOk('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // Killed in after() with everything else in the namespace.
    spawn('ip', ['netns', 'exec', ns, 'etcd', '--data-dir', join(dir, 'etcd'), '--listen-client-urls', 'http://127.0.0.1:2379',
      '--advertise-client-urls', 'http://127.0.0.1:2379', '--listen-peer-urls', 'http://127.0.0.1:2380'], { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      if ((await run('ip', ['netns', 'exec', ns, 'etcdctl', '--endpoints', 'http://127.0.0.1:2379', 'endpoint', 'health'])).code === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('etcd did not start');
  });

  after(async () => {
    await run('ip', ['netns', 'pids', ns]).then((r) => r.stdout.split('\n').filter(Boolean).forEach((p) => { try { process.kill(Number(p), 'SIGKILL'); } catch { /* gone */ } }));
    await new Promise((r) => setTimeout(r, 200));
    await run('ip', ['netns', 'del', ns]);
    await rm(dir, { recursive: true, force: true });
  });

  it("lists a prefix whose answer is larger than gRPC's default limit of 4 MB", async () => {
    // A cluster of about 6,000 services passed it: its service list and every relist failed for good.
    const store = resolve('dist/src/cluster/store.js');
    const script = `
      const { ClusterStore } = await import(${JSON.stringify(store)});
      const s = new ClusterStore(['http://127.0.0.1:2379']);
      const v = 'x'.repeat(10000);
      for (let b = 0; b < 6; b++) await s.apply(Array.from({ length: 100 }, (_, i) => ['/big/' + b + '/' + i, v]));
      const listed = await s.list('/big/');
      const [read] = await s.readMany([{ key: '/big/', prefix: true }]);
      const at = await s.listAt('/big/');
      console.log('listed ' + listed.size + ' ' + read.size + ' ' + at.items.size);
      await s.deletePrefix('/big/');
      s.close();
      process.exit(0);
    `;
    const r = await run('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script]);
    assert.equal(r.stdout.trim(), 'listed 600 600 600', r.stderr);
  });

  it('stops within its bound when the server is frozen', async () => {
    // The client runs inside the namespace (its store is on that loopback); it prints what it saw.
    const store = resolve('dist/src/cluster/store.js');
    const script = `
      const { ClusterStore } = await import(${JSON.stringify(store)});
      const s = new ClusterStore(['http://127.0.0.1:2379']);
      const seen = [];
      await s.put('/t/a', 1);
      const stop = await s.watchBatches('/t/', 1, (ev) => seen.push(...ev.map((e) => e.key)), () => {});
      await new Promise((r) => setTimeout(r, 300));
      console.log('ready ' + seen.join(','));
      await new Promise((r) => process.stdin.once('data', r));
      const t0 = Date.now();
      await stop();
      console.log('stopped ' + (Date.now() - t0));
      s.close();
      process.exit(0);
    `;
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    const waitOut = async (re: RegExp, ms: number) => {
      for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (re.test(out)) return;
      throw new Error(`waited for ${re}: ${out}`);
    };
    try {
      await waitOut(/^ready /m, 10_000);
      assert.match(out, /^ready \/t\/a$/m, 'the watch works before the freeze');
      const etcdPids = (await run('ip', ['netns', 'pids', ns])).stdout.split('\n').filter(Boolean).map(Number).filter((p) => p !== child.pid);
      assert.ok(etcdPids.length > 0, 'etcd to freeze');
      for (const p of etcdPids) process.kill(p, 'SIGSTOP');
      child.stdin!.write('go\n');
      await waitOut(/^stopped \d+$/m, 8000);
      const ms = Number(/^stopped (\d+)$/m.exec(out)![1]);
      assert.ok(ms < 5000, `stop took ${ms} ms`);
    } finally {
      child.kill('SIGKILL');
      for (const p of (await run('ip', ['netns', 'pids', ns])).stdout.split('\n').filter(Boolean).map(Number)) { try { process.kill(p, 'SIGCONT'); } catch { /* gone */ } }
    }
  });
});
