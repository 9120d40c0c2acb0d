import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { meshKind } from '../../src/network/lbkinds.js';
import { elementArgs } from '../../src/network/lbbatch.js';
import { arrangeOne } from '../../src/network/lbtable.js';
import { arrange, LB_TABLE, lbScript, lbTable, ServiceBalancers, type VipEntry } from '../../src/network/servicelb.js';
import { nftApply } from '../../src/kernel/nft.js';
import { nativeAddon } from '../../src/util/cjs.js';
import { run, runOk } from '../../src/util/exec.js';

/**
 * A sandbox's VIP balancer in a real namespace of the test's own: its per-backend connection
 * counters (a counter on each slot map element) survive the table's changes while their backend
 * stays, a backend that leaves keeps
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
  const connect = async (n: number, to = { netns, vip: '10.77.0.100' }) => {
    const script = Array.from({ length: n }, () => `busybox nc -w 1 ${to.vip} 80 </dev/null >/dev/null 2>&1`).join('\n');
    await run('nsenter', [`--net=${to.netns}`, 'sh', '-c', `${script}\ntrue`]);
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
    assert.doesNotMatch(listed, /10\.77\.0\.6\b/, 'the leaving backend\'s element is deleted');
    assert.match(listed, /10\.77\.0\.100 counter packets \d+ bytes \d+ : 10\.77\.0\.7\b/, 'the new backend has an element with a counter');
    assert.deepEqual(await hits(), { ...first, '10.77.0.7': 0 });
    await connect(10);
    const second = await hits();
    assert.equal(second['10.77.0.6'], first['10.77.0.6']);
    assert.equal(second['10.77.0.5']! + second['10.77.0.7']! - first['10.77.0.5']!, 10);
    assert.equal(await total(), 30);
    // Connections since that reading, then .7 leaves: its element's count is read as it goes, to the last one.
    await connect(6);
    await sync('c1', ['10.77.0.5', '10.77.0.8']);
    const third = await hits();
    assert.equal(await total(), 36, JSON.stringify(third));
    assert.equal(third['10.77.0.7']! + third['10.77.0.5']! - second['10.77.0.7']! - second['10.77.0.5']!, 6);
    assert.ok(third['10.77.0.7']! > second['10.77.0.7']!, `the leaving backend's last connections are counted: ${JSON.stringify(third)}`);
  });

  it('takes a VIP\'s backends in turn, also after one is replaced by its slot\'s element alone', async () => {
    const four = ['10.77.0.11', '10.77.0.12', '10.77.0.13', '10.77.0.14'];
    await sync('c1', four);
    const base = await hits();
    await connect(40);
    const after = await hits();
    for (const ip of four) assert.equal(after[ip]! - (base[ip] ?? 0), 10, `${ip}: ${JSON.stringify(after)}`);
    await sync('c1', ['10.77.0.11', '10.77.0.12', '10.77.0.15', '10.77.0.14']);
    await connect(40);
    const replaced = await hits();
    for (const ip of ['10.77.0.11', '10.77.0.12', '10.77.0.14']) assert.equal(replaced[ip]! - after[ip]!, 10, `${ip}: ${JSON.stringify(replaced)}`);
    assert.equal(replaced['10.77.0.15'], 10);
    assert.equal(replaced['10.77.0.13'], after['10.77.0.13'], 'the replaced backend keeps its count');
    // Scaled down to the backends of slots 2 and 3, which move to slots 0 and 1: their connections since the last
    // reading are read as their elements go, and so are those of the backends that leave.
    await connect(8);
    await sync('c1', ['10.77.0.14', '10.77.0.15']);
    const scaled = await hits();
    for (const ip of ['10.77.0.15', '10.77.0.14', '10.77.0.11', '10.77.0.12']) assert.equal(scaled[ip]! - replaced[ip]!, 2, `${ip}: ${JSON.stringify(scaled)}`);
    await connect(4);
    assert.deepEqual([(await hits())['10.77.0.14']! - scaled['10.77.0.14']!, (await hits())['10.77.0.15']! - scaled['10.77.0.15']!], [2, 2]);
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

  /** The table as a comparable shape: chains with their rules, every map's and set's elements (sorted, with their counters zeroed). */
  const shape = async (netns: string) => {
    const doc = JSON.parse(await runOk('nft', ['-j', 'list', 'table', 'ip', LB_TABLE], { netns })) as { nftables: Array<Record<string, any>> };
    const zero = (v: unknown) => JSON.stringify(v, (k, x) => (k === 'packets' || k === 'bytes' ? 0 : x));
    const out: Record<string, unknown> = {};
    for (const i of doc.nftables) {
      if (i.chain) out[`chain ${i.chain.name}`] = [];
      else if (i.map) out[`map ${i.map.name}`] = (i.map.elem ?? []).map(zero).sort();
      else if (i.set) out[`set ${i.set.name}`] = (i.set.elem ?? []).map(zero).sort();
    }
    for (const i of doc.nftables) if (i.rule) (out[`chain ${i.rule.chain}`] as unknown[]).push(zero(i.rule.expr));
    return out;
  };
  /**
   * The shape without the slots a table has beyond what its VIPs need (slot maps with no element,
   * their chains, and the rr maps past them): a changed table keeps the slots it made, and one made
   * whole has SPARE_SLOTS.
   */
  const lean = async (netns: string) => {
    const out = await shape(netns);
    let used = 0;
    for (let i = 0; out[`map slot${i}`]; i++) if ((out[`map slot${i}`] as unknown[]).length) used = i + 1;
    for (let i = used; out[`map slot${i}`]; i++) {
      assert.deepEqual(out[`map slot${i}`], [], `slot ${i} past the last one used is empty`);
      delete out[`map slot${i}`];
      delete out[`chain to${i}`];
      delete out[`map rr${i + 1}`];
    }
    return out;
  };
  /** Runs `body` with two namespaces of the test's own: the balancer's and one for the table made whole. */
  const twoNamespaces = async (tag: string, body: (lbNetns: string, wholeNetns: string) => Promise<void>) => {
    const [a, b] = [`${ns}${tag}a`, `${ns}${tag}b`];
    await runOk('ip', ['netns', 'add', a]);
    try {
      await runOk('ip', ['netns', 'add', b]);
      await body(`/run/netns/${a}`, `/run/netns/${b}`);
    } finally {
      await run('ip', ['netns', 'del', a]);
      await run('ip', ['netns', 'del', b]);
    }
  };
  /** Makes the table whole from `entries` (arranged) in a namespace. */
  const makeWhole = (entries: VipEntry[], netns: string) => nftApply(`table ip ${LB_TABLE}\ndelete table ip ${LB_TABLE}\n${entries.length ? lbTable(entries) : ''}`, { netns });

  it('changes a table by differences that leave it as the table made whole would be, over random changes of services and backends', async () => {
    const fresh = `${ns}f`;
    await runOk('ip', ['netns', 'add', fresh]);
    try {
      let seed = 7;
      // In 32-bit integers: in doubles the product loses its low bits and the walk soon repeats one state (every VIP gone).
      const rnd = (n: number) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 16) % n; };
      const services = ['svcaaaaaaaaaaaaX', 'svcbbbbbbbbbbbbY', 'svccccccccccccZ'];
      // What the balancer holds: each VIP's backends in their slots (a backend keeps its slot), as arrange() makes them.
      let applied: VipEntry[] | undefined;
      let resized = 0;
      let elementsOnly = 0;
      let compared = 0;
      let last: VipEntry[] = [];
      for (let step = 0; step < 41; step++) {
        let entries: VipEntry[] = [];
        if (step % 3 === 2 && last.some((e) => e.backends.length)) {
          // A backend replaced (its task moved): the same number of backends, another address.
          const live = last.filter((e) => e.backends.length);
          const e = live[rnd(live.length)]!;
          const spare = [5, 6, 7, 8, 9].map((b) => e.vip.replace(/\.200$/, `.${b}`)).filter((ip) => !e.backends.includes(ip));
          const slot = rnd(e.backends.length);
          entries = last.map((o) => (o === e ? { ...o, backends: o.backends.map((ip, i) => (i === slot ? spare[0]! : ip)) } : { ...o }));
        } else {
          for (const [k, svc] of services.entries()) {
            if (rnd(4) === 0) continue;
            // Some VIPs on two networks (a container on both of a service's networks).
            for (const net of rnd(3) === 0 ? [1, 2] : [1]) {
              const backends = [5, 6, 7, 8].filter(() => rnd(2) === 0).map((b) => `10.7${net}.${k}.${b}`).reverse();
              entries.push({ service: svc, vip: `10.7${net}.${k}.200`, backends });
            }
          }
        }
        last = entries;
        await lb.sync(new Map([['c2', { netns, entries }]]), false);
        const arranged = arrange(applied, entries);
        const slots = (l: VipEntry[] | undefined) => Math.max(0, ...(l ?? []).map((e) => e.backends.length));
        if (slots(applied) !== slots(arranged)) resized++;
        if (elementArgs(lbScript(applied, arranged))) elementsOnly++;
        applied = entries.length ? arranged : undefined;
        await nftApply(`table ip ${LB_TABLE}\ndelete table ip ${LB_TABLE}\n${entries.length ? lbTable(arranged) : ''}`, { netns: `/run/netns/${fresh}` });
        if (!entries.length) continue;
        compared++;
        assert.deepEqual(await lean(netns), await lean(`/run/netns/${fresh}`), `step ${step}: ${JSON.stringify(entries)}`);
      }
      // The next test wants a table here.
      await lb.sync(new Map([['c2', { netns, entries: [{ service: services[0]!, vip: '10.71.0.200', backends: ['10.71.0.5'] }] }]]), false);
      assert.ok(!logs.some((l) => l.includes('c2') && l.includes('remade')), `a difference did not apply: ${logs.join('\n')}`);
      // The walk went through both kinds of change: slots added and removed, and elements alone (berth-nftset's).
      assert.ok(compared >= 30 && resized >= 3 && elementsOnly >= 5, `compared ${compared}, resized ${resized}, elements only ${elementsOnly}`);
    } finally {
      await run('ip', ['netns', 'del', fresh]);
    }
  });

  it('patches a few VIPs with the whole table\'s number of slots, not the patched VIPs\' own', async () => {
    await twoNamespaces('s', async (lbNetns, wholeNetns) => {
      const vip = (k: string) => `10.82.0.${k === 'a' ? 100 : 101}`;
      const entry = (k: string, n: number): VipEntry => ({ service: `svc${k}aaaaaaaaaaaaaaa`, vip: vip(k), backends: [5, 6, 7].slice(0, n).map((b) => `10.82.${k === 'a' ? 1 : 2}.${b}`) });
      const model = new Map<string, VipEntry>();
      const step = async (what: string, e: VipEntry) => {
        model.set(e.vip, arrangeOne(model.get(e.vip), e));
        await lb.patch(new Map([['c4', { netns: lbNetns, entries: [e], removed: [], whole: () => [...model.values()] }]]));
        await makeWhole([...model.values()], wholeNetns);
        assert.deepEqual(await lean(lbNetns), await lean(wholeNetns), what);
      };
      await step('made whole (unknown sandbox)', entry('a', 3));
      await step('b added with 3', entry('b', 3));
      // a alone would say 2 slots: b, untouched, still needs slot 2.
      await step('a shrunk to 2 while b has 3', entry('a', 2));
      assert.match(await runOk('nft', ['list', 'map', 'ip', LB_TABLE, 'slot2'], { netns: lbNetns }), /10\.82\.0\.101 counter packets \d+ bytes \d+ : 10\.82\.2\.7/);
      await step('b, the last with 3, shrunk to 2: slot 2 stays, empty', entry('b', 2));
      assert.doesNotMatch(await runOk('nft', ['list', 'map', 'ip', LB_TABLE, 'slot2'], { netns: lbNetns }), /elements/);
      await step('a grown to 3: into slot 2 as it is', entry('a', 3));
      // b alone would say slot 2 is new: made twice, its chain would have its rule twice.
      await step('b grown to 3 while a has 3', entry('b', 3));
      await step('a emptied (rejected) while b has 3', entry('a', 0));
      await step('b shrunk to 1, a still empty: slots 1 and 2 stay, empty', entry('b', 1));
      assert.ok(!logs.some((l) => l.includes('c4')), `a patch did not apply: ${logs.join('\n')}`);
    });
  });

  it('patches a table to what the table made whole from the merged entries would be, over random patches', async () => {
    await twoNamespaces('p', async (lbNetns, wholeNetns) => {
      let seed = 11;
      const rnd = (n: number) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 16) % n; };
      /** What the balancer should hold, arranged as its patches arrange each VIP. */
      const model = new Map<string, VipEntry>();
      let resized = 0;
      let emptied = 0;
      let compared = 0;
      for (let step = 0; step < 60; step++) {
        const entries: VipEntry[] = [];
        const removed: string[] = [];
        // One to three distinct VIPs (ServiceNet names each VIP once).
        for (const k of new Set(Array.from({ length: 1 + rnd(3) }, () => rnd(6)))) {
          const vip = `10.83.${k}.200`;
          // Removed (sometimes while also patched, when it stays), or patched: its service may change, its backends may be none.
          if (rnd(4) === 0) removed.push(vip);
          if (rnd(4) !== 0) entries.push({ service: `svc${k}${rnd(5) === 0 ? 'y' : 'x'}aaaaaaaaaaaa`, vip, backends: [5, 6, 7, 8].filter(() => rnd(2) === 0).map((b) => `10.83.${k}.${b}`) });
        }
        const slots = () => Math.max(0, ...[...model.values()].map((e) => e.backends.length));
        const had = slots();
        for (const e of entries) model.set(e.vip, arrangeOne(model.get(e.vip), e));
        for (const v of removed) if (!entries.some((e) => e.vip === v)) model.delete(v);
        if (slots() !== had) resized++;
        await lb.patch(new Map([['c3', { netns: lbNetns, entries, removed, whole: () => [...model.values()] }]]));
        if (!model.size) {
          emptied++;
          assert.notEqual((await run('nft', ['list', 'table', 'ip', LB_TABLE], { netns: lbNetns })).code, 0, `step ${step}: no VIP, no table`);
          continue;
        }
        await makeWhole([...model.values()], wholeNetns);
        compared++;
        assert.deepEqual(await lean(lbNetns), await lean(wholeNetns), `step ${step}: ${JSON.stringify({ entries, removed })}`);
      }
      assert.ok(!logs.some((l) => l.includes('c3')), `a patch did not apply: ${logs.join('\n')}`);
      assert.ok(compared >= 40 && resized >= 5, `compared ${compared}, resized ${resized}, emptied ${emptied}`);
    });
  });

  it('keeps each backend\'s count across patches of its VIP as across whole changes', async () => {
    await twoNamespaces('c', async (at) => {
      await runOk('ip', ['-n', at.slice('/run/netns/'.length), '-batch', '-'], { input: 'link set lo up\naddress add 10.78.0.1/24 dev lo\n' });
      const to = { netns: at, vip: '10.78.0.100' };
      const other: VipEntry = { service: svc, vip: '10.78.0.101', backends: ['10.78.0.21'] };
      const patch = (backends: string[] | undefined) => lb.patch(new Map([['c5', {
        netns: at, entries: backends ? [{ service: svc, vip: to.vip, backends }] : [], removed: backends ? [] : [to.vip], whole: () => [other, { service: svc, vip: to.vip, backends: backends ?? [] }],
      }]]));
      const mine = async () => Object.fromEntries(Object.entries(await hits()).filter(([ip]) => ip.startsWith('10.78.')));
      await patch(['10.78.0.11', '10.78.0.12', '10.78.0.13', '10.78.0.14']);
      await connect(40, to);
      const first = await mine();
      assert.deepEqual(first, { '10.78.0.11': 10, '10.78.0.12': 10, '10.78.0.13': 10, '10.78.0.14': 10, '10.78.0.21': 0 });
      // .13 replaced by .15: by its slot's element alone; the others go on, .13 keeps its count.
      await patch(['10.78.0.11', '10.78.0.12', '10.78.0.15', '10.78.0.14']);
      await connect(40, to);
      const replaced = await mine();
      assert.deepEqual(replaced, { '10.78.0.11': 20, '10.78.0.12': 20, '10.78.0.13': 10, '10.78.0.14': 20, '10.78.0.15': 10, '10.78.0.21': 0 });
      // Scaled down: .14 and .15 move to slots 0 and 1, .11 and .12 leave; the connections since the last reading of all four are read as their elements go.
      await connect(8, to);
      await patch(['10.78.0.14', '10.78.0.15']);
      const scaled = await mine();
      assert.deepEqual([scaled['10.78.0.14'], scaled['10.78.0.15'], scaled['10.78.0.11'], scaled['10.78.0.12']], [22, 12, 22, 22]);
      await connect(4, to);
      const after = await mine();
      assert.deepEqual([after['10.78.0.14'], after['10.78.0.15']], [24, 14]);
      // The VIP removed: its backends' counts stay in the totals.
      await patch(undefined);
      assert.doesNotMatch(await runOk('nft', ['list', 'table', 'ip', LB_TABLE], { netns: at }), /10\.78\.0\.100/);
      assert.deepEqual(await mine(), after);
      assert.ok(!logs.some((l) => l.includes('c5')), logs.join('\n'));
    });
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

/**
 * The routing mesh's balancer in real namespaces: a client namespace linked to a "host" namespace
 * by a veth, the published port DNATed there to a backend's address and target port by the slot
 * tables of the mesh kind. The backends are addresses on the sandbox's
 * own loopback with one server on the target port that answers the address it was reached at, so
 * each answer names the backend the connection went to. Backend changes are elements that
 * berth-nftset writes; the counts follow each backend.
 */
describe('the routing mesh\'s balancer', () => {
  const sbox = `btli${process.pid}s`;
  const client = `btli${process.pid}c`;
  const svc = 'svcingressaaaaaaaaaaaa';
  const logs: string[] = [];
  const lb = new ServiceBalancers((m) => logs.push(m), meshKind('10.79.0.2'));
  let server: ReturnType<typeof spawn> | undefined;

  before(async () => {
    await runOk('ip', ['netns', 'add', sbox]);
    await runOk('ip', ['netns', 'add', client]);
    await runOk('ip', ['-n', sbox, '-batch', '-'], {
      input: ['link set lo up', 'address add 10.79.1.1/24 dev lo', `link add btli0 type veth peer name btli1 netns ${client}`,
        'address add 10.79.0.2/24 dev btli0', 'link set btli0 up'].join('\n') + '\n',
    });
    await runOk('ip', ['-n', client, '-batch', '-'], { input: 'link set lo up\naddress add 10.79.0.9/24 dev btli1\nlink set btli1 up\n' });
    server = spawn('nsenter', [`--net=/run/netns/${sbox}`, process.execPath, '-e',
      "require('net').createServer((s) => s.end(s.localAddress + ':' + s.localPort + '\\n')).listen(80, '0.0.0.0', () => console.log('ready'))"], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => { server!.stdout!.once('data', () => resolve()); server!.once('exit', (c) => reject(new Error(`server exited ${c}`))); });
  });

  after(async () => {
    server?.kill('SIGKILL');
    await run('ip', ['netns', 'del', sbox]);
    await run('ip', ['netns', 'del', client]);
    const left = (await run('ip', ['netns', 'list'])).stdout;
    assert.ok(!left.includes(sbox) && !left.includes(client), left);
  });

  const sync = (backends: string[]) => lb.sync(new Map([['sbox', { netns: `/run/netns/${sbox}`, entries: backends.length ? [{ service: svc, vip: 'tcp . 8080', backends }] : [] }]]), true);
  /** `n` connections from the client to the published port, one after the other: what each was answered (or '' when refused). */
  const ask = async (n: number) => {
    const script = `const net=require('net');let left=${n};const out=[];const one=()=>{if(!left--){console.log(JSON.stringify(out));return;}let b='';const s=net.connect(8080,'10.79.0.2');s.on('data',(d)=>b+=d);s.on('close',()=>{out.push(b.trim());one();});s.on('error',()=>{});};one();`;
    return JSON.parse(await runOk('nsenter', [`--net=/run/netns/${client}`, process.execPath, '-e', script])) as string[];
  };
  const tally = (answers: string[]) => answers.reduce<Record<string, number>>((t, a) => ({ ...t, [a]: (t[a] ?? 0) + 1 }), {});
  const hits = async () => Object.fromEntries((await lb.hits((id) => id === svc)).map((h) => [h.backend, h.connections]));

  it('DNATs a published port to each backend\'s address and target port in turn, and follows backend changes by elements alone', async () => {
    await sync(['10.79.1.5 . 80', '10.79.1.6 . 80']);
    assert.deepEqual(tally(await ask(10)), { '10.79.1.5:80': 5, '10.79.1.6:80': 5 }, 'round robin over both backends, on the target port');
    assert.deepEqual(await hits(), { '10.79.1.5': 5, '10.79.1.6': 5 });
    // .6 replaced by .7: the elements of one slot; .5 keeps its element and its count.
    const before = arrange(undefined, [{ service: svc, vip: 'tcp . 8080', backends: ['10.79.1.5 . 80', '10.79.1.6 . 80'] }]);
    const replaced = arrange(before, [{ service: svc, vip: 'tcp . 8080', backends: ['10.79.1.5 . 80', '10.79.1.7 . 80'] }]);
    assert.ok(elementArgs(lbScript(before, replaced, undefined, meshKind('10.79.0.2')), meshKind('10.79.0.2')), 'a backend replaced is elements only');
    await sync(['10.79.1.5 . 80', '10.79.1.7 . 80']);
    const listed = await runOk('nft', ['list', 'table', 'ip', 'berth_mesh'], { netns: `/run/netns/${sbox}` });
    assert.doesNotMatch(listed, /10\.79\.1\.6/);
    assert.match(listed, /tcp \. 8080 counter packets 0 bytes 0 : 10\.79\.1\.7 \. 80/);
    assert.deepEqual(tally(await ask(6)), { '10.79.1.5:80': 3, '10.79.1.7:80': 3 });
    assert.deepEqual(await hits(), { '10.79.1.5': 8, '10.79.1.6': 5, '10.79.1.7': 3 });
    // A third backend (the spare slot the table was made with), then back to one (the port's bucket rules written again by berthd's batch).
    await sync(['10.79.1.5 . 80', '10.79.1.7 . 80', '10.79.1.8 . 80']);
    assert.deepEqual(tally(await ask(6)), { '10.79.1.5:80': 2, '10.79.1.7:80': 2, '10.79.1.8:80': 2 });
    await sync(['10.79.1.8 . 80']);
    assert.deepEqual(tally(await ask(3)), { '10.79.1.8:80': 3 });
    // No backend: the port is no element, and the host itself refuses it at once.
    await sync([]);
    assert.deepEqual(await ask(2), ['', '']);
    assert.deepEqual(logs, [], 'every change applied as a difference');
  });
});

/**
 * The addon's nftsetIn, which berthd uses for a balancer's element and rule changes: one
 * transaction on a socket made inside the sandbox, all or nothing, failures naming the argument;
 * no socket kept (none would hold a sandbox alive after its container).
 */
describe('nftsetIn: a balancer\'s change sent from berthd into a sandbox', () => {
  const ns = `btns${process.pid}`;
  const netns = `/run/netns/${ns}`;
  const addon = nativeAddon<{ nftsetIn(netns: string, table: string, args: string[]): Promise<void> }>('berth-netns.node', 'the test');
  const K1 = '0a00000200500000'; // 10.0.0.2 . 80, as the kernel stores a concatenation
  const K2 = '0a00000300500000';
  const D = '0a00000900500000';

  before(async () => {
    await runOk('ip', ['netns', 'add', ns]);
    await nftApply('table ip berth_t {\n  map slot0 { type ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }\n  map slot1 { type ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }\n}\n', { netns });
  });

  after(async () => {
    await run('ip', ['netns', 'del', ns]);
    assert.equal((await run('ip', ['netns', 'list'])).stdout.includes(ns), false);
  });

  const listed = async () => (await runOk('nft', ['list', 'table', 'ip', 'berth_t'], { netns })).toString();
  const fds = async () => (await fs.readdir('/proc/self/fd')).length;

  it('adds and deletes in one transaction, all or nothing, and says which argument failed', async () => {
    const before = await fds();
    await addon().nftsetIn(netns, 'berth_t', [`+slot1/${K1}:${D}`]);
    assert.match(await listed(), /10\.0\.0\.2 \. 80 counter packets 0 bytes 0 : 10\.0\.0\.9 \. 80/);
    // The second add fails (already there): the first of the batch is undone with it.
    await assert.rejects(addon().nftsetIn(netns, 'berth_t', [`+slot0/${K2}:${D}`, `+slot1/${K1}:${D}`]), new RegExp(`berth_t \\+slot1/${K1}:${D}: File exists`));
    assert.doesNotMatch(await listed(), /10\.0\.0\.3/);
    await addon().nftsetIn(netns, 'berth_t', [`-slot1/${K1}`, `+slot0/${K2}:${D}`]);
    const after = await listed();
    assert.doesNotMatch(after, /10\.0\.0\.2/);
    assert.match(after, /10\.0\.0\.3 \. 80 counter packets 0 bytes 0 : 10\.0\.0\.9 \. 80/);
    await assert.rejects(addon().nftsetIn(netns, 'berth_t', ['+slot0/zz']), /bad element \+slot0\/zz/);
    // `~` deletes and says the element's count as it went; `-` says nothing; a replaced element's old count comes back.
    await runOk('nft', ['add', 'element', 'ip', 'berth_t', 'slot1', '{ 10.0.0.2 . 80 counter packets 7 bytes 420 : 10.0.0.9 . 80 }'], { netns });
    await runOk('nft', ['add', 'element', 'ip', 'berth_t', 'slot1', '{ 10.0.0.4 . 80 counter packets 4294967301 bytes 1 : 10.0.0.9 . 80 }'], { netns });
    assert.deepEqual(await addon().nftsetIn(netns, 'berth_t', [`~slot1/${K1}`, `+slot1/${K1}:${D}`, '~slot1/0a00000400500000', `-slot0/${K2}`]), [
      { set: 'slot1', key: K1, packets: 7 }, { set: 'slot1', key: '0a00000400500000', packets: 4294967301 },
    ]);
    assert.match(await listed(), /10\.0\.0\.2 \. 80 counter packets 0 bytes 0 : 10\.0\.0\.9 \. 80/);
    assert.deepEqual(await addon().nftsetIn(netns, 'berth_t', [`-slot1/${K1}`]), []);
    await assert.rejects(addon().nftsetIn(netns, 'berth_t', [`~slot1/${K1}`]), new RegExp(`berth_t ~slot1/${K1}: No such file or directory`));
    await assert.rejects(addon().nftsetIn(`${netns}-none`, 'berth_t', [`-slot0/${K2}`]), new RegExp(`${netns}-none: No such file or directory`));
    // Every socket closed (by a detached thread, so give it a moment): none holds the namespace.
    let now = await fds();
    for (let i = 0; i < 50 && now > before; i++, now = await fds()) await new Promise((r) => setTimeout(r, 20));
    assert.equal(now, before);
  });

  it('writes a bucket chain\'s rules as nft writes them: a VIP\'s or a port\'s match, then goto to0 or numgen over rrN', async () => {
    await nftApply([
      'table ip berth_t {',
      '  map rr2 { typeof numgen inc mod 2 : verdict; }',
      '  chain to0 {', '  }', '  chain to1 {', '  }',
      '  chain b1 {', '    ip daddr 10.0.0.99 goto to1', '  }',
      '}', '',
    ].join('\n'), { netns });
    await runOk('nft', ['add', 'element', 'ip', 'berth_t', 'rr2', '{ 0 : goto to0, 1 : goto to1 }'], { netns });
    // Flushed and written again in one transaction: the old rule goes, the new ones in order.
    await addon().nftsetIn(netns, 'berth_t', ['=b1', '>b1/0a0000fe/2', '>b1/060000001f900000/1', '>b1/1100000000350000/2']);
    const chain = async () => (await runOk('nft', ['list', 'chain', 'ip', 'berth_t', 'b1'], { netns })).toString().split('\n').map((l) => l.trim()).filter((l) => /dport|daddr/.test(l));
    const written = await chain();
    assert.deepEqual(written, ['ip daddr 10.0.0.254 numgen inc mod 2 vmap @rr2', 'tcp dport 8080 goto to0', 'udp dport 53 numgen inc mod 2 vmap @rr2']);
    // The same rules made by nft are the same expressions (what a table made whole has).
    const json = async () => JSON.stringify((JSON.parse((await runOk('nft', ['-j', 'list', 'chain', 'ip', 'berth_t', 'b1'], { netns })).toString()) as { nftables: Array<{ rule?: { expr: unknown } }> }).nftables.flatMap((i) => (i.rule ? [i.rule.expr] : [])));
    const fromAddon = await json();
    await nftApply(['flush chain ip berth_t b1', ...written.map((r) => `add rule ip berth_t b1 ${r}`), ''].join('\n'), { netns });
    assert.equal(await json(), fromAddon);
    // A bucket chain made, a dispatch element going to it, then both gone again; a chain that is not there cannot go.
    await nftApply('add map ip berth_t vips { type ipv4_addr : verdict; }\n', { netns });
    await addon().nftsetIn(netns, 'berth_t', ['*b2', '+vips/0a0000fd:@b2', '>b2/0a0000fd/1']);
    assert.match(await listed(), /elements = \{ 10\.0\.0\.253 : goto b2 \}[\s\S]*chain b2 \{\n\s*ip daddr 10\.0\.0\.253 goto to0\n/);
    await assert.rejects(addon().nftsetIn(netns, 'berth_t', ['+vips/0a0000fc:@b3']), /berth_t \+vips\/0a0000fc:@b3: No such file or directory/);
    await addon().nftsetIn(netns, 'berth_t', ['-vips/0a0000fd', '=b2', '!b2']);
    assert.doesNotMatch(await listed(), /chain b2|10\.0\.0\.253/);
    await assert.rejects(addon().nftsetIn(netns, 'berth_t', ['!b2']), /berth_t !b2: No such file or directory/);
    // A bad rule, or one whose map is not there: refused, nothing changed.
    await assert.rejects(addon().nftsetIn(netns, 'berth_t', ['=b1', '>b1/0a00/2']), /bad rule >b1\/0a00\/2/);
    await assert.rejects(addon().nftsetIn(netns, 'berth_t', ['=b1', '>b1/0a0000fe/0']), /bad rule/);
    await assert.rejects(addon().nftsetIn(netns, 'berth_t', ['=b1', '>b1/0a0000fe/3']), /berth_t >b1\/0a0000fe\/3: No such file or directory/);
    assert.deepEqual(await chain(), written);
    await runOk('nft', ['delete', 'table', 'ip', 'berth_t'], { netns });
  });
});
