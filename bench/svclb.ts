/**
 * node dist/bench/svclb.js [--sizes 100,10000] [--rounds 20]   (berth only)
 * The kernel side of one backend change in a container's service balancer (issue 18: "with 10,000
 * services: one backend change ≤ 20 ms and ≤ 1.5x its cost at 100 services"): scratch namespaces
 * whose `berth_svc` table balances N VIPs of two backends each, then one backend of one service
 * replaced, at 100 and at 10,000 services (namespaces of their own), interleaved, three ways:
 * - whole: as ServiceBalancers.sync does it when handed all N entries (the walk of the N entries,
 *   and the transaction of what differs: for a replaced backend, a slot's elements through
 *   berth-nftset); making the entries is not timed;
 * - patch: as ServiceBalancers.patch does it when handed the one service's entry, which is what
 *   ServiceNet hands it after a batch; making the entry is not timed;
 * - follow: the whole of it from the store's batch on (ServiceNet.follow of the task records and
 *   the new backend's endpoint: which services changed, their entries from its index, then the
 *   patch), with the store's view faked in memory.
 * The last change is read back from the kernel each time. The replaced backend's UDP flows, which
 * ServiceBalancers drops after the change, are waited for and timed apart. Nothing but those
 * namespaces is touched; they go at the end.
 */
import { ServiceNet } from '../src/cluster/servicenet.js';
import { ROOT } from '../src/cluster/keys.js';
import type { WatchEvent } from '../src/cluster/store.js';
import type { EndpointRecord } from '../src/network/overlay.js';
import { ServiceBalancers, type VipEntry } from '../src/network/servicelb.js';
import { run, runOk } from '../src/util/exec.js';
import { log, median, now, quantile, option } from './util.js';

const ROUNDS = Number(option('--rounds', '20'));
/** The two table sizes compared (`--sizes 100,10000`). */
const [SMALL, LARGE] = option('--sizes', '100,10000').split(',').map(Number) as [number, number];
const WAYS = ['whole', 'patch', 'follow'] as const;
type Way = (typeof WAYS)[number];

const quad = (a: number, i: number) => `10.${a + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const serviceId = (i: number) => `svc${String(i).padStart(12, '0')}x`;
/** Service 0's second backend when swapped: one address outside every service's. */
const SWAPPED = '10.99.0.2';

function entry(i: number, swap: boolean): VipEntry {
  // Two backends per service, each a distinct address; service 0's second backend is swapped.
  return { service: serviceId(i), vip: quad(100, i), backends: [quad(60, i), i === 0 && swap ? SWAPPED : quad(80, i)] };
}
const entries = (n: number, swap: boolean) => Array.from({ length: n }, (_, i) => entry(i, swap));

/**
 * A ServiceNet over N services on one network, each with two running tasks, balancing one local
 * sandbox; `swap(on)` is the batch that replaces service 0's second task by one at SWAPPED.
 */
function serviceNet(n: number, netns: string, lb: ServiceBalancers): { net: ServiceNet; lb: ServiceBalancers; first: WatchEvent<unknown>[]; swap: (on: boolean) => WatchEvent<unknown>[] } {
  const eps = new Map<string, EndpointRecord>();
  const net = new ServiceNet(() => [...eps.values()], () => [{ id: `f${n}`, netns, networks: ['net'] }], lb, () => undefined);
  const put = (key: string, value: unknown): WatchEvent<unknown> => {
    if (key.startsWith(`${ROOT}endpoints/`)) eps.set(key, value as EndpointRecord);
    return { type: 'put', key, value, modRevision: 1 };
  };
  const endpoint = (i: number, c: string, ip: string) => put(`${ROOT}endpoints/net/e${c}`, { Network: 'net', EndpointID: `e${c}`, ContainerID: c, Name: c, Aliases: [`tasks.w${i}`], IP: ip, Mac: '', Node: 'n', Vtep: '' });
  const task = (i: number, c: string, running: boolean) => put(`${ROOT}tasks/t${c}`, {
    ID: `t${c}`, ServiceID: serviceId(i), DesiredState: running ? 'running' : 'shutdown', ServiceAnnotations: { Name: `w${i}` },
    Spec: { Networks: [{ Target: 'net' }] }, Status: { State: running ? 'running' : 'shutdown', ContainerStatus: { ContainerID: c } },
  });
  const first: WatchEvent<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    first.push(put(`${ROOT}services/${serviceId(i)}`, {
      ID: serviceId(i), Spec: { Name: `w${i}`, Mode: { Replicated: { Replicas: 2 } }, TaskTemplate: { ContainerSpec: { Image: 'busybox' }, Networks: [{ Target: 'net' }] } },
      Endpoint: { Spec: { Mode: 'vip' }, VirtualIPs: [{ NetworkID: 'net', Addr: `${quad(100, i)}/8` }] },
    }));
    first.push(endpoint(i, `a${i}`, quad(60, i)), endpoint(i, `b${i}`, quad(80, i)), task(i, `a${i}`, true), task(i, `b${i}`, true));
  }
  // The new task's endpoint comes with its record, as its host publishes both when it starts.
  const swap = (on: boolean) => (on ? [endpoint(0, 'x', SWAPPED), task(0, 'x', true), task(0, 'b0', false)] : [task(0, 'b0', true), task(0, 'x', false)]);
  return { net, lb, first, swap };
}

async function main(): Promise<void> {
  const sizes = [SMALL, LARGE];
  /** Each size's namespaces: one for the whole and patch ways (each round goes there and back), one for ServiceNet's. */
  const names = sizes.flatMap((n) => [`bblb${process.pid}n${n}`, `bblb${process.pid}f${n}`]);
  for (const ns of names) await runOk('ip', ['netns', 'add', ns]);
  const netnsOf = (n: number, f = '') => `/run/netns/bblb${process.pid}${f ? 'f' : 'n'}${n}`;
  const lb = new ServiceBalancers((m) => log(m));
  const times = new Map<string, number[]>(sizes.flatMap((n) => WAYS.map((w) => [`${w} ${n}`, []] as [string, number[]])));
  const drops: number[] = [];
  const nets = new Map<number, ReturnType<typeof serviceNet>>();
  try {
    for (const n of sizes) {
      let t0 = now();
      await lb.sync(new Map([[`s${n}`, { netns: netnsOf(n), entries: entries(n, false) }]]), false);
      log(`${n} services: table made in ${(now() - t0).toFixed(0)} ms`);
      // Balancers of its own: ServiceNet's whole sync forgets every sandbox it does not list.
      const sn = serviceNet(n, netnsOf(n, 'f'), new ServiceBalancers((m) => log(m)));
      t0 = now();
      await sn.net.follow(sn.first, true);
      log(`${n} services: ServiceNet's first list followed and its table made in ${(now() - t0).toFixed(0)} ms`);
      nets.set(n, sn);
    }
    const change = async (way: Way, n: number, swap: boolean) => {
      // New objects every time, as ServiceNet hands them over; making them is ServiceNet's work, not timed.
      // Only the way's own input is made: 10,000 entries made for another way would be collected
      // within this one's time.
      const whole = way === 'whole' ? new Map([[`s${n}`, { netns: netnsOf(n), entries: entries(n, swap) }]]) : undefined;
      const one = way === 'patch' ? new Map([[`s${n}`, { netns: netnsOf(n), entries: [entry(0, swap)], removed: [], whole: () => entries(n, swap) }]]) : undefined;
      const batch = way === 'follow' ? nets.get(n)!.swap(swap) : undefined;
      const t0 = now();
      if (whole) await lb.sync(whole, false);
      else if (one) await lb.patch(one);
      else await nets.get(n)!.net.follow(batch!, false);
      times.get(`${way} ${n}`)!.push(now() - t0);
      // The replaced backend's UDP flows are dropped after the change, not within it: timed apart.
      const t1 = now();
      await (way === 'follow' ? nets.get(n)!.lb : lb).flowsDropped();
      drops.push(now() - t1);
      const listed = await runOk('nft', ['list', 'map', 'ip', 'berth_svc', 'slot1'], { netns: netnsOf(n, way === 'follow' ? 'f' : '') });
      const want = swap ? SWAPPED : quad(80, 0);
      if (!listed.includes(`10.100.0.0 counter packets 0 bytes 0 : ${want}`)) throw new Error(`${way}, ${n} services: the change is not in the kernel`);
    };
    for (let r = 0; r < ROUNDS; r++) {
      // Sizes and ways in turn, each order as often as the other: whole and patch share a namespace, each
      // taking it there and back in a round (so each starts from the table the other left).
      const order = r % 2 ? [LARGE, SMALL] : [SMALL, LARGE];
      const ways: Way[] = r % 4 < 2 ? ['whole', 'patch'] : ['patch', 'whole'];
      for (const n of order) {
        await change(ways[0]!, n, true);
        await change(ways[1]!, n, false);
        await change('follow', n, r % 2 === 0);
      }
    }
  } finally {
    for (const ns of names) await run('ip', ['netns', 'del', ns]);
  }
  const p = (v: number[]) => `median ${median(v).toFixed(2)} ms, p90 ${quantile(v, 0.9).toFixed(2)} ms (${v.length})`;
  for (const w of WAYS) {
    const a = times.get(`${w} ${SMALL}`)!;
    const b = times.get(`${w} ${LARGE}`)!;
    log(`one backend change, ${w}: ${SMALL} services ${p(a)}; ${LARGE} services ${p(b)}: ${(median(b) / median(a)).toFixed(2)}x`);
  }
  log(`then the replaced backend's UDP flows dropped (conntrack -D, after the change): ${p(drops)}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
