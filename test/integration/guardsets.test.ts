import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { guardTableScript } from '../../src/network/firewall.js';
import { nftApply } from '../../src/kernel/nft.js';
import { run, runOk } from '../../src/util/exec.js';

/**
 * The source guard's elements written over netlink (guardsets.ts, native/berth-nftelems.c) in a
 * namespace of the test's own: the kernel holds exactly what `nft` itself writes for the same
 * endpoint, a revoke leaves nothing, a transaction with one bad element changes nothing, and an
 * add of an element already there is no failure. The writes run in a child Node started inside
 * the namespace, as berthd runs in its own.
 */
describe('source guard elements over netlink', () => {
  const ns = `btgs${process.pid}`;
  const netns = `/run/netns/${ns}`;
  const guardsets = new URL('../../src/network/guardsets.js', import.meta.url).href;
  const src = { port: 'bve-nl', mac: '02:42:0a:00:00:05', ip: '10.0.0.5', ip6: 'fd00::5' };
  const remote = [{ mac: '02:42:0a:00:01:03', ip: '10.0.1.3' }, { mac: '02:42:0a:00:01:04', ip: '10.0.1.4' }];

  /** Runs `body` (with allowSourceOps, revokeSourceOps, remoteSourceOps, portOp, writeGuard in scope) in the namespace; its printed output. */
  const inNs = async (body: string) => {
    const script = `import { allowSourceOps, revokeSourceOps, remoteSourceOps, portOp, writeGuard } from '${guardsets}';\n${body}`;
    const r = await run('nsenter', [`--net=${netns}`, process.execPath, '--input-type=module', '-e', script]);
    if (r.code !== 0) throw new Error(`child: ${r.stderr}`);
    return r.stdout.trim();
  };
  /** A guard set's elements as `nft` prints them, sorted. */
  const elements = async (set: string) => {
    const out = await runOk('nft', ['list', 'set', 'bridge', 'berth', set], { netns });
    const m = /elements = \{([^}]*)\}/.exec(out);
    return m ? m[1]!.split(',').map((e) => e.trim()).filter(Boolean).sort() : [];
  };
  const SETS = ['ports', 'macs', 'src4', 'src6', 'nd6'];
  const all = async () => Object.fromEntries(await Promise.all(SETS.map(async (s) => [s, await elements(s)] as const)));

  before(async () => {
    await runOk('ip', ['netns', 'add', ns]);
    await nftApply(guardTableScript(), { netns });
  });

  after(async () => {
    await run('ip', ['netns', 'del', ns]);
    assert.equal((await run('ip', ['netns', 'list'])).stdout.includes(ns), false);
  });

  it("writes an endpoint's allowances as nft itself writes them", async () => {
    await inNs(`await writeGuard(allowSourceOps(${JSON.stringify(src)}));`);
    const byNetlink = await all();
    // The same endpoint by nft, under another port name.
    const p = '"bve-nft"';
    const ll = 'fe80::42:aff:fe00:5';
    await nftApply([
      `add element bridge berth macs { ${p} . ${src.mac} }`,
      `add element bridge berth src4 { ${p} . ${src.mac} . ${src.ip}, ${p} . ${src.mac} . 0.0.0.0 }`,
      `add element bridge berth src6 { ${p} . ${src.mac} . ${ll}, ${p} . ${src.mac} . ${src.ip6} }`,
      `add element bridge berth nd6 { ${p} . ${src.mac} . 0xfe8000000000000000420afffe000005, ${p} . ${src.mac} . 0xfd000000000000000000000000000005 }`,
      `add element bridge berth ports { ${p} }`,
    ].join('\n') + '\n', { netns });
    const both = await all();
    for (const set of SETS) {
      const fromNft = both[set]!.filter((e) => e.startsWith(p)).map((e) => e.replace(p, '"bve-nl"')).sort();
      assert.deepEqual(byNetlink[set], fromNft, set);
      assert.ok(fromNft.length > 0, set);
    }
    // The link-local address in nd6 is the one the MAC gives (EUI-64), as src6 has it.
    assert.ok(byNetlink.src6!.some((e) => e.endsWith(ll)));
  });

  it('revokes them all, leaving the other port alone', async () => {
    await inNs(`await writeGuard(revokeSourceOps(${JSON.stringify(src)}));`);
    for (const [set, els] of Object.entries(await all())) assert.ok(els.every((e) => e.startsWith('"bve-nft"')), `${set}: ${els.join(', ')}`);
  });

  it('a transaction with an element that cannot be deleted changes nothing and names it; an add of one already there is no failure', async () => {
    const out = await inNs(`
      try { await writeGuard([...remoteSourceOps('bvx-t', ${JSON.stringify(remote)}, 'add'), ...remoteSourceOps('bvx-t', [{ mac: '02:42:0a:00:09:09', ip: '10.0.9.9' }], 'delete')]); console.log('written'); }
      catch (e) { console.log(e.message); }`);
    assert.match(out, /^nftables bridge berth: delete macs 6276782d74[0-9a-f]+02420a0009090000: No such file or directory$/);
    assert.ok((await elements('macs')).every((e) => !e.startsWith('"bvx-t"')), 'half of a failed transaction was kept');
    await inNs(`const ops = remoteSourceOps('bvx-t', ${JSON.stringify(remote)}, 'add'); await writeGuard(ops); await writeGuard([...ops, portOp('bvx-t', 'add')]);`);
    assert.deepEqual((await elements('macs')).filter((e) => e.startsWith('"bvx-t"')), remote.map((r) => `"bvx-t" . ${r.mac}`));
    assert.ok((await elements('ports')).includes('"bvx-t"'));
    await inNs(`await writeGuard([portOp('bvx-t', 'delete'), ...remoteSourceOps('bvx-t', ${JSON.stringify(remote)}, 'delete')]);`);
    assert.ok(Object.values(await all()).flat().every((e) => !e.startsWith('"bvx-t"')));
  });

  it('refuses a key the kernel cannot take before anything is sent', async () => {
    const out = await inNs(`try { await writeGuard(remoteSourceOps('bvx-t', [{ mac: '02:42:zz:00:00:01', ip: '10.0.0.1' }], 'add')); console.log('written'); } catch (e) { console.log(e.message); }`);
    assert.equal(out, 'invalid MAC address: 02:42:zz:00:00:01');
  });
});
