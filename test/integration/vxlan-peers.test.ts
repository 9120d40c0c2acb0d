import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { run, runOk } from '../../src/util/exec.js';

/**
 * The overlay's remote endpoints written over rtnetlink (native/berth-peers.c through
 * kernel/vxlan.ts programPeers), checked against what `bridge` and `ip` read back from the kernel.
 * The calls run in a child process inside a namespace of the test's own, as berthd runs in its.
 */
const ns = `bt${process.pid}vx`;
const vxlanModule = fileURLToPath(new URL('../../src/kernel/vxlan.js', import.meta.url));

async function program(dev: string, add: unknown[], del: unknown[]): Promise<{ code: number | null; stderr: string }> {
  const script = `import(${JSON.stringify(vxlanModule)}).then((m) => m.programPeers(${JSON.stringify(dev)}, ${JSON.stringify(add)}, ${JSON.stringify(del)})).catch((e) => { console.error(e.message); process.exit(3); });`;
  const r = await run('ip', ['netns', 'exec', ns, process.execPath, '-e', script]);
  return { code: r.code, stderr: r.stderr.trim() };
}

async function kernelPeers(): Promise<{ fdb: string[]; neigh: string[] }> {
  const fdb = JSON.parse(await runOk('ip', ['netns', 'exec', ns, 'bridge', '-j', 'fdb', 'show', 'dev', 'btvxlan-peers01'])) as Array<{ mac: string; dst?: string; state?: string }>;
  const neigh = JSON.parse(await runOk('ip', ['-n', ns, '-j', 'neigh', 'show', 'dev', 'btvxlan-peers01'])) as Array<{ dst: string; lladdr?: string; state?: string[] }>;
  return {
    fdb: fdb.filter((e) => e.dst).map((e) => `${e.mac} ${e.dst} ${e.state ?? ''}`).sort(),
    neigh: neigh.map((n) => `${n.dst} ${n.lladdr} ${(n.state ?? []).join(',')}`).sort(),
  };
}

describe('overlay peers over rtnetlink', () => {
  before(async () => {
    await runOk('ip', ['netns', 'add', ns]);
    await runOk('ip', ['-n', ns, '-batch', '-'], { input: 'link set lo up\nlink add btvxlan-peers01 type vxlan id 42 local 127.0.0.1 dstport 4789 nolearning proxy\nlink set btvxlan-peers01 up\n' });
  });
  after(async () => {
    await run('ip', ['netns', 'del', ns]);
  });

  it('adds, moves and removes remote endpoints as bridge and ip would have', async () => {
    // Addresses of 15 characters, the longest IPv4 has.
    const a = { ip: '192.168.100.205', mac: '02:42:0a:d2:00:05', vtep: '192.168.200.202' };
    const b = { ip: '10.210.0.6', mac: '02:42:0a:d2:00:06', vtep: '10.99.0.3' };
    assert.deepEqual(await program('btvxlan-peers01', [a, b], []), { code: 0, stderr: '' });
    assert.deepEqual(await kernelPeers(), {
      fdb: [`${a.mac} ${a.vtep} permanent`, `${b.mac} ${b.vtep} permanent`].sort(),
      neigh: [`${a.ip} ${a.mac} PERMANENT`, `${b.ip} ${b.mac} PERMANENT`].sort(),
    });
    // b moved to another host: its FDB entry is replaced, the old destination deleted without its neighbour.
    const moved = { ...b, vtep: '10.99.0.4' };
    assert.equal((await program('btvxlan-peers01', [moved], [{ ...b, ip: '' }])).code, 0);
    assert.deepEqual((await kernelPeers()).fdb, [`${a.mac} ${a.vtep} permanent`, `${b.mac} ${moved.vtep} permanent`]);
    // Deleting what is already gone (a crash removed it) is no error, and the rest still goes.
    assert.deepEqual(await program('btvxlan-peers01', [], [{ ip: '10.210.0.99', mac: '02:42:0a:d2:00:63', vtep: '10.99.0.9' }, a, moved]), { code: 0, stderr: '' });
    assert.deepEqual(await kernelPeers(), { fdb: [], neigh: [] });
  });

  it('a failure names the step, the entry and the device', async () => {
    const r = await program('btnosuch0', [{ ip: '10.210.0.7', mac: '02:42:0a:d2:00:07', vtep: '10.99.0.2' }], []);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /device btnosuch0: No such device/);
    const bad = await program('btvxlan-peers01', [{ ip: '10.210.0.7', mac: 'zz', vtep: '10.99.0.2' }], []);
    assert.equal(bad.code, 3);
    assert.match(bad.stderr, /programPeers\(dev, \[\{ op, mac, ip\?, vtep\? \}\], tolerant\)/);
  });
});
