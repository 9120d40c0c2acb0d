/**
 * Network policy (issue 20), berth only (Docker has none): with many labelled peers and 100
 * policies on one bridge network,
 *  - TCP connect+echo latency and iperf3 throughput from a client container to a server whose
 *    ingress is isolated by 100 rules (the client's group matched by the last), against the same
 *    client to a server on the same network without policy;
 *  - the time of `network connect` for a container that joins a selected group, against one that
 *    joins no group (the difference is policy's work), at two peer counts;
 *  - the kernel's time for the element update itself: one `add element` + `delete element` per nft
 *    transaction, run through one `nft -i` in berthd's namespace, in a set of the small and of the
 *    large peer count.
 * Full: 1,000 peers (containers on four bridges of their own; half of them in the large group
 * g5); --quick: 50.
 */
import { join } from 'node:path';
import type { BenchContext } from '../context.js';
import { PACKAGE_ROOT, type Engine } from '../engines.js';
import * as op from '../ops.js';
import { log, now, run } from '../util.js';

const TOOLS = join(PACKAGE_ROOT, 'dist', 'bench', 'tools');
const NET = 'polbench';
const GROUPS = 100;
const ECHO = 7000;
const IPERF = 5201;

async function create(e: Engine, name: string, labels: Record<string, string>, network: string, cmd = ['sleep', '86400']): Promise<string> {
  const c = await e.api('POST', `/containers/create?name=${name}`, { Image: 'busybox', Cmd: cmd, Labels: labels, HostConfig: { NetworkMode: network } });
  if (c.status !== 201) throw new Error(`create ${name}: ${c.status} ${c.body}`);
  return c.json.Id as string;
}

async function start(e: Engine, id: string): Promise<void> {
  const s = await e.api('POST', `/containers/${id}/start`);
  if (s.status !== 204) throw new Error(`start ${id}: ${s.status} ${s.body}`);
}

async function sandbox(e: Engine, name: string): Promise<{ key: string; ip: string }> {
  const j = await e.apiOk('GET', `/containers/${name}/json`);
  const nets = j.NetworkSettings.Networks as Record<string, { IPAddress: string }>;
  return { key: j.NetworkSettings.SandboxKey as string, ip: (nets[NET] ?? Object.values(nets)[0])?.IPAddress as string };
}

/** Milliseconds per one-element transaction (add then delete) in `set`, over `n` rounds in one `nft -i`. */
async function elementUpdateMs(e: Engine, set: string, n: number): Promise<number> {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push(`add element inet berth-policy ${set} { 10.255.${i >> 8}.${i & 255} }`, `delete element inet berth-policy ${set} { 10.255.${i >> 8}.${i & 255} }`);
  const empty = await run('nsenter', [`--net=${e.netnsPath}`, 'nft', '-i'], { input: '' });
  if (empty.code !== 0) throw new Error(empty.stderr);
  const t0 = now();
  const r = await run('nsenter', [`--net=${e.netnsPath}`, 'nft', '-i'], { input: lines.join('\n') + '\n' });
  const ms = now() - t0;
  if (r.code !== 0 || r.stderr.trim()) throw new Error(`nft: ${r.stderr.slice(0, 300)}`);
  return ms / (2 * n);
}

async function setOf(e: Engine, group: string): Promise<string> {
  // The set whose selector is grp=<group>: the one holding that group's first peer's address.
  const peer = await sandbox(e, `peer${Number(group.slice(1))}`);
  if (group === 'g5') Object.assign(peer, await sandbox(e, 'peer0'));
  const r = await run('nsenter', [`--net=${e.netnsPath}`, 'nft', '-j', 'list', 'sets', 'inet']);
  const sets = (JSON.parse(r.stdout).nftables as Array<{ set?: { name: string; table: string; elem?: unknown[] } }>).filter((x) => x.set?.table === 'berth-policy' && x.set.name.endsWith('_4'));
  const found = sets.find((x) => JSON.stringify(x.set!.elem ?? []).includes(`"${peer.ip}"`));
  if (!found) throw new Error(`no set holds ${peer.ip}`);
  return found.set!.name;
}

export async function policy(ctx: BenchContext): Promise<void> {
  const R = ctx.results;
  const G = 'Network policy (berth.policy.* labels; berth only)';
  const peers = ctx.quick ? 50 : 1000;
  R.define({ key: 'policy_connect_open', group: G, label: 'TCP connect+echo latency, container to container, no policy', unit: 'ms', better: 'lower' });
  R.define({ key: 'policy_connect_policed', group: G, label: `TCP connect+echo latency to a server isolated by ${GROUPS} rules, ${peers} labelled peers`, unit: 'ms', better: 'lower', target: '≤ 1.1x without policy' });
  R.define({ key: 'policy_iperf_open', group: G, label: 'iperf3 throughput, container to container, no policy', unit: 'Gbit/s', better: 'higher' });
  R.define({ key: 'policy_iperf_policed', group: G, label: `iperf3 throughput to the policed server, ${peers} peers`, unit: 'Gbit/s', better: 'higher', target: '≥ 0.95x without policy' });
  R.define({ key: 'policy_join_selected', group: G, label: `network connect of a container joining a selected group (${peers} peers)`, unit: 'ms', better: 'lower' });
  R.define({ key: 'policy_join_plain', group: G, label: `network connect of a container joining no group (${peers} peers)`, unit: 'ms', better: 'lower' });
  R.define({ key: 'policy_element_small', group: G, label: `kernel time of one set-element update (a group of ${Math.ceil(peers / GROUPS)})`, unit: 'ms', better: 'lower', target: '≤ 5 ms' });
  R.define({ key: 'policy_element_large', group: G, label: `kernel time of one set-element update (a group of ${peers / 2 + Math.ceil(peers / GROUPS)})`, unit: 'ms', better: 'lower', target: '≤ 5 ms, the same as a small group' });

  for (const e of ctx.engines.filter((x) => x.name === 'berth')) {
    await e.apiOk('POST', '/networks/create', { Name: NET, Driver: 'bridge', CheckDuplicate: true, IPAM: { Driver: 'default', Config: [{ Subnet: '10.128.0.0/16' }] } });
    // 100 policies: the server accepts 99 groups it never hears from, then the client's.
    const rules: Record<string, string> = {};
    for (let g = 0; g < GROUPS - 1; g++) rules[`berth.policy.ingress.g${g}`] = `labels:grp=g${g} ports:${ECHO},${IPERF}`;
    rules['berth.policy.ingress.zclient'] = `labels:grp=client ports:${ECHO},${IPERF}`;
    const serve = ['sh', '-c', 'sleep 86400'];
    const policed = await create(e, 'srvpol', rules, NET, serve);
    const open = await create(e, 'srvopen', {}, NET, serve);
    const client = await create(e, 'client', { grp: 'client' }, NET);
    for (const id of [policed, open, client]) await start(e, id);
    log(`policy: starting ${peers} labelled peers`);
    // The peers live on bridges of their own, 250 each (a selector without network: matches them
    // wherever they are): one bridge of 1,000 ports loses broadcasts (ARP) to its oldest ports,
    // because a flood queues one copy per port on the CPU's backlog (net.core.netdev_max_backlog,
    // 1,000), for Docker as for berth.
    const peerNets = Math.ceil(peers / 250);
    R.note('policy_connect_policed', `the client, both servers and the joining containers are on one bridge; the ${peers} peers on ${peerNets} bridges of their own (a selector without \`network:\` holds them wherever they are): one bridge of 1,000 ports loses broadcasts (ARP) to its oldest ports, a flood queueing one copy per port on the CPU's backlog (net.core.netdev_max_backlog, 1,000), for any engine. Across hosts a peer is one element in each host's set the same way (test/integration/policy-multihost.test.ts).`);
    for (let k = 0; k < peerNets; k++) {
      await e.apiOk('POST', '/networks/create', { Name: `${NET}p${k}`, Driver: 'bridge', CheckDuplicate: true, IPAM: { Driver: 'default', Config: [{ Subnet: `10.129.${k * 4}.0/22` }] } });
    }
    for (let i = 0; i < peers; i++) {
      // Half the peers are in g5 (the large group), the rest spread over all groups (g7: the small one).
      await start(e, await create(e, `peer${i}`, { grp: i % 2 === 0 ? 'g5' : `g${i % GROUPS}` }, `${NET}p${i % peerNets}`));
      if (i % 100 === 99) log(`policy: ${i + 1} peers`);
    }
    const [sp, so, cl] = await Promise.all([sandbox(e, 'srvpol'), sandbox(e, 'srvopen'), sandbox(e, 'client')]);
    for (const s of [sp, so]) {
      e.spawnHelper(s.key, process.execPath, [join(TOOLS, 'echo.js'), String(ECHO)]);
      e.spawnHelper(s.key, 'iperf3', ['-s', '-p', String(IPERF)]);
    }
    await new Promise((r) => setTimeout(r, 1000));
    const reps = ctx.quick ? 1 : 5;
    for (let rep = 0; rep < reps; rep++) {
      for (const [key, target] of rep % 2 ? [['open', so], ['policed', sp]] as const : [['policed', sp], ['open', so]] as const) {
        const t = await run('nsenter', [`--net=${cl.key}`, process.execPath, join(TOOLS, 'tcpping.js'), target.ip, String(ECHO), String(ctx.quick ? 50 : 300)]);
        if (t.code !== 0) throw new Error(`tcpping ${key}: ${t.stderr.slice(-300)}`);
        for (const ms of JSON.parse(t.stdout) as number[]) R.add(`policy_connect_${key}`, e.name, ms);
        const ip = await run('nsenter', [`--net=${cl.key}`, 'iperf3', '-c', target.ip, '-p', String(IPERF), '-t', ctx.quick ? '2' : '5', '-J']);
        const j = JSON.parse(ip.stdout || '{}');
        if (!j.end) throw new Error(`iperf3 ${key}: ${ip.stderr.slice(-300)}`);
        R.add(`policy_iperf_${key}`, e.name, j.end.sum_received.bits_per_second / 1e9);
      }
    }
    // Joining: a container of group g5 (selected by the server's 6th rule) and one of no group,
    // created on another network and connected to the policed one.
    await e.apiOk('POST', '/networks/create', { Name: `${NET}b`, Driver: 'bridge', CheckDuplicate: true });
    for (let i = 0; i < (ctx.quick ? 5 : 20); i++) {
      for (const [key, labels] of [['selected', { grp: 'g5' }], ['plain', {}]] as const) {
        const id = await create(e, `join${key}${i}`, labels, `${NET}b`);
        await start(e, id);
        R.add(`policy_join_${key}`, e.name, await op.connect(e, NET, id));
        await op.rmForce(e, id);
      }
    }
    const large = await setOf(e, 'g5');
    R.add('policy_element_large', e.name, await elementUpdateMs(e, large, 500));
    const small = await setOf(e, 'g7');
    R.add('policy_element_small', e.name, await elementUpdateMs(e, small, 500));
    await e.killHelpers();
    await e.removeAll();
  }
}
