import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LB_TABLE, lbTable, ServiceBalancers, type VipEntry } from '../../src/network/servicelb.js';
import { nftApply } from '../../src/kernel/nft.js';
import { run, runOk } from '../../src/util/exec.js';

/**
 * A sandbox's VIP balancer in a real namespace of the test's own: its per-backend connection
 * counters survive the table's rewrites while their backend stays, a backend that leaves keeps
 * its count in the total, a sandbox that goes keeps its counts too, and a table changed behind
 * berth's back is made whole without counting anything twice. Connections are TCP SYNs from the
 * namespace to the VIP: the nat chain counts each connection's first packet, answered or not.
 */
describe('service balancer counters', () => {
  const ns = `btlb${process.pid}`;
  const netns = `/run/netns/${ns}`;
  const svc = 'svcaaaaaaaaaaaabbbbbbbbb';
  const logs: string[] = [];
  const lb = new ServiceBalancers((m) => logs.push(m));
  const exists = (id: string) => id === svc;

  before(async () => {
    await runOk('ip', ['netns', 'add', ns]);
    // The backends' addresses are local to the namespace (lo's /24), so each SYN is answered at once with a reset.
    await runOk('ip', ['-n', ns, '-batch', '-'], { input: 'link set lo up\naddress add 10.77.0.1/24 dev lo\n' });
  });

  after(async () => {
    await run('ip', ['netns', 'del', ns]);
    assert.equal((await run('ip', ['netns', 'list'])).stdout.includes(ns), false);
  });

  const entries = (backends: string[]): VipEntry[] => [{ service: svc, vip: '10.77.0.100', backends }];
  const sync = (id: string, backends: string[]) => lb.sync(new Map([[id, { netns, entries: entries(backends) }]]), false);
  const connect = async (n: number) => {
    const script = Array.from({ length: n }, () => 'busybox nc -w 1 10.77.0.100 80 </dev/null >/dev/null 2>&1').join('\n');
    await run('nsenter', [`--net=${netns}`, 'sh', '-c', `${script}\ntrue`]);
  };
  const hits = async () => Object.fromEntries((await lb.hits(exists)).map((h) => [h.backend, h.connections]));
  const total = async () => Object.values(await hits()).reduce((a, b) => a + b, 0);

  it('counts each backend\'s connections and keeps the counts of backends that stay across a change', async () => {
    await sync('c1', ['10.77.0.5', '10.77.0.6']);
    assert.deepEqual(await hits(), { '10.77.0.5': 0, '10.77.0.6': 0 });
    await connect(20);
    const first = await hits();
    assert.equal(first['10.77.0.5']! + first['10.77.0.6']!, 20);
    assert.ok(first['10.77.0.5']! > 0 && first['10.77.0.6']! > 0, `both backends chosen: ${JSON.stringify(first)}`);
    // .6 leaves, .7 comes: .5 goes on from its count, .6 keeps its count, .7 starts at zero.
    await sync('c1', ['10.77.0.5', '10.77.0.7']);
    const listed = (await runOk('nft', ['list', 'table', 'ip', LB_TABLE], { netns })).toString();
    assert.doesNotMatch(listed, /10_77_0_6/, 'the leaving backend\'s counter is deleted');
    assert.deepEqual(await hits(), { ...first, '10.77.0.7': 0 });
    await connect(10);
    const second = await hits();
    assert.equal(second['10.77.0.6'], first['10.77.0.6']);
    assert.equal(second['10.77.0.5']! + second['10.77.0.7']! - first['10.77.0.5']!, 10);
    assert.equal(await total(), 30);
  });

  it('remakes a table changed behind its back, without counting a connection twice or losing the total', async () => {
    const was = await total();
    await runOk('nft', ['delete', 'table', 'ip', LB_TABLE], { netns });
    await sync('c1', ['10.77.0.5']);
    assert.ok(logs.some((l) => l.includes('remade')), logs.join('\n'));
    assert.equal(await total(), was);
    await connect(5);
    assert.equal(await total(), was + 5);
    assert.equal((await hits())['10.77.0.5']! >= 5, true);
  });

  it('changes a table by differences that leave it as the table made whole would be, over random changes of services and backends', async () => {
    const fresh = `${ns}f`;
    await runOk('ip', ['netns', 'add', fresh]);
    try {
      /** The table as a comparable shape: chains with their rules, the map's and the set's elements, the counters' names. */
      const shape = async (netns: string) => {
        const doc = JSON.parse(await runOk('nft', ['-j', 'list', 'table', 'ip', LB_TABLE], { netns })) as { nftables: Array<Record<string, any>> };
        const out: Record<string, unknown> = { counters: [] as string[] };
        for (const i of doc.nftables) {
          if (i.chain) out[`chain ${i.chain.name}`] = [];
          else if (i.counter) (out.counters as string[]).push(i.counter.name);
          else if (i.map) out['map vips'] = JSON.stringify(i.map.elem ?? []);
          else if (i.set) out['set empty'] = JSON.stringify(i.set.elem ?? []);
        }
        for (const i of doc.nftables) if (i.rule) (out[`chain ${i.rule.chain}`] as unknown[]).push(JSON.stringify(i.rule.expr, (k, v) => (k === 'packets' || k === 'bytes' ? 0 : v)));
        (out.counters as string[]).sort();
        return out;
      };
      let seed = 7;
      const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
      const services = ['svcaaaaaaaaaaaaX', 'svcbbbbbbbbbbbbY', 'svccccccccccccZ'];
      for (let step = 0; step < 25; step++) {
        const entries: VipEntry[] = [];
        for (const [k, svc] of services.entries()) {
          if (rnd(4) === 0) continue;
          // Some VIPs on two networks (a container on both of a service's networks).
          for (const net of rnd(3) === 0 ? [1, 2] : [1]) {
            const backends = [5, 6, 7, 8].filter(() => rnd(2) === 0).map((b) => `10.7${net}.${k}.${b}`);
            entries.push({ service: svc, vip: `10.7${net}.${k}.200`, backends });
          }
        }
        await lb.sync(new Map([['c2', { netns, entries }]]), false);
        await nftApply(`table ip ${LB_TABLE}\ndelete table ip ${LB_TABLE}\n${entries.length ? lbTable(entries) : ''}`, { netns: `/run/netns/${fresh}` });
        if (!entries.length) continue;
        assert.deepEqual(await shape(netns), await shape(`/run/netns/${fresh}`), `step ${step}: ${JSON.stringify(entries)}`);
      }
      assert.ok(!logs.some((l) => l.includes('c2') && l.includes('remade')), `a difference did not apply: ${logs.join('\n')}`);
    } finally {
      await run('ip', ['netns', 'del', fresh]);
    }
  });

  it('keeps the counts of a sandbox that went, and forgets a removed service\'s', async () => {
    const was = await total();
    await lb.sync(new Map(), true);
    assert.equal((await run('nft', ['list', 'table', 'ip', LB_TABLE], { netns })).code, 0, 'a forgotten sandbox\'s table is the namespace\'s to take');
    assert.equal(await total(), was);
    assert.deepEqual(await lb.hits(() => false), []);
    await runOk('nft', ['delete', 'table', 'ip', LB_TABLE], { netns });
  });
});
