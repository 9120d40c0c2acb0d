import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { OVERLAY_HOST_PREFIX, overlayHostLink } from '../../src/network/overlay.js';
import { run } from '../../src/util/exec.js';
import { lookup, type TestHost } from '../integration/harness.js';

/**
 * What must hold between berth's store and the kernel of one test host whenever no operation is
 * in flight: after a crash and restart, after a fault, after a soak. Shared by crash.test.ts,
 * the chaos runner (npm run chaos) and its short form in the suite.
 *
 * Every check returns violations as text rather than stopping at the first, so a chaos run can
 * report all it found in one cycle.
 */
export interface InvariantOptions {
  /**
   * Containers whose conmon a test killed (or the "everything killed" fault took): they may run
   * without a monitor, watched by berthd itself. Every other running container has exactly one.
   */
  orphans?: ReadonlySet<string>;
  /** Every container id this host ever had: a cgroup named by one that is not running is a leak. */
  knownIds?: Iterable<string>;
  /**
   * Name resolution: every running container on a user network answers by name (and alias) from
   * another running container on the same network, with its address there; `removedNames` (and
   * names of containers that are not running) answer NXDOMAIN. `dnsSample` bounds the lookups per
   * network (each is an exec); 0 skips DNS.
   */
  dnsSample?: number;
  removedNames?: readonly string[];
  /** Bound on each API call (ms); a call past it is a violation ("hang"), not a wait. */
  timeoutMs?: number;
}

interface Inspect {
  Id: string;
  Name: string;
  State: { Running: boolean; Status: string; Pid: number; ExitCode: number; Error?: string; StartedAt?: string; FinishedAt?: string };
  HostConfig: { RestartPolicy?: { Name: string; MaximumRetryCount?: number } };
  RestartCount: number;
  NetworkSettings: {
    SandboxKey: string;
    Ports: Record<string, unknown[] | null>;
    Networks: Record<string, { IPAddress: string; EndpointID: string; MacAddress?: string; Aliases?: string[] | null }>;
  };
}

/** Every container's inspect, through the API (bounded). */
export async function inspectAll(host: TestHost, timeoutMs = 15_000): Promise<Inspect[]> {
  const list = await host.api('GET', '/containers/json?all=1', undefined, {}, { timeoutMs });
  if (list.status !== 200) throw new Error(`GET /containers/json: ${list.status} ${list.body}`);
  const out: Inspect[] = [];
  for (const s of list.json as Array<{ Id: string }>) {
    const c = await host.api('GET', `/containers/${s.Id}/json`, undefined, {}, { timeoutMs });
    if (c.status === 404) continue; // removed meanwhile (an auto-remove)
    if (c.status !== 200) throw new Error(`inspect ${s.Id}: ${c.status} ${c.body}`);
    out.push(c.json as Inspect);
  }
  return out;
}

/** Host ends of veths in the test host's namespace (berth names them vb…). */
/**
 * A swarm node's ingress endpoint is an address the host holds on its link on the ingress network
 * (a /32 beside the gateway, the link's MAC its own): every overlay host link holds its gateway
 * and nothing else, but for that one address on ingress, which must be the endpoint berthd shows.
 */
async function ingressAddressViolations(host: TestHost): Promise<string[]> {
  const v: string[] = [];
  const links = JSON.parse((await host.inNetns('ip', ['-j', 'addr', 'show', 'type', 'macvlan'])).stdout || '[]') as Array<{ ifname: string; address: string; addr_info?: Array<{ family: string; local: string; prefixlen: number }> }>;
  const extra = links.filter((l) => l.ifname.startsWith(OVERLAY_HOST_PREFIX)).flatMap((l) => (l.addr_info ?? []).filter((a) => a.family === 'inet' && a.prefixlen === 32).map((a) => ({ link: l, ip: a.local })));
  if (!extra.length) return v;
  // The ingress network by its flag: Docker's tutorial makes one of another name (`network create --ingress`).
  const list = await host.api('GET', '/networks').catch(() => undefined);
  const id = (list?.json as Array<{ Id: string; Ingress?: boolean }> | undefined)?.find((n) => n.Ingress)?.Id;
  const r = id ? await host.api('GET', `/networks/${id}`).catch(() => undefined) : undefined;
  const net = r?.status === 200 ? r.json as { Id: string; Containers?: Record<string, { IPv4Address: string; MacAddress: string }> } : undefined;
  const mine = net?.Containers?.['ingress-sbox'];
  for (const { link, ip } of extra) {
    if (!net || link.ifname !== overlayHostLink(net.Id)) v.push(`${link.ifname} holds ${ip}/32 but is not the host's link on the ingress network`);
    else if (mine?.IPv4Address.split('/')[0] !== ip) v.push(`${link.ifname} holds ${ip}/32 but this host's ingress endpoint is ${mine?.IPv4Address ?? 'none'}`);
    else if (link.address !== mine.MacAddress) v.push(`${link.ifname} has MAC ${link.address} but this host's ingress endpoint has ${mine.MacAddress}`);
  }
  return v;
}

export async function hostVeths(host: TestHost): Promise<string[]> {
  const r = await run('ip', ['-n', host.netns, '-o', 'link', 'show']);
  return r.stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '').filter((n) => n.startsWith('vb'));
}

/** Interfaces (but lo) inside a container's namespace, from the pin berth keeps. */
export async function interfacesIn(netnsPath: string): Promise<string[]> {
  const r = await run('nsenter', [`--net=${netnsPath}`, 'ip', '-o', 'link', 'show']);
  return r.stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '').filter((n) => n && n !== 'lo').sort();
}

/** Live (not zombie) conmon processes of this host, by the container id they monitor (`-c ID`). */
export async function conmons(host: TestHost): Promise<Map<string, number[]>> {
  const ps = await run('ps', ['-eo', 'pid=,stat=,args=']);
  const out = new Map<string, number[]>();
  for (const line of ps.stdout.split('\n')) {
    const m = /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (!m || m[2]!.startsWith('Z') || !/(^|\/)conmon\s/.test(m[3]!) || !m[3]!.includes(host.root)) continue;
    const id = /\s-c\s+([0-9a-f]{64})/.exec(m[3]!)?.[1];
    if (!id) continue;
    out.set(id, [...(out.get(id) ?? []), Number(m[1])]);
  }
  return out;
}

/** The conmon that monitors a container (it is named with -c ID on its command line). */
export async function conmonOf(host: TestHost, id: string): Promise<number | undefined> {
  return (await conmons(host)).get(id)?.[0];
}

/** runc processes (create, start, delete, kill …) of this host that are alive right now. */
export async function runcProcesses(host: TestHost): Promise<number[]> {
  const ps = await run('ps', ['-eo', 'pid=,stat=,args=']);
  const out: number[] = [];
  for (const line of ps.stdout.split('\n')) {
    const m = /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (!m || m[2]!.startsWith('Z')) continue;
    const args = m[3]!;
    // The program itself (conmon's arguments name berth-runc too).
    const prog = args.split(/\s/)[0]!.split('/').pop();
    if ((prog === 'runc' || prog === 'berth-runc') && args.includes(join(host.root, 'runc'))) out.push(Number(m[1]));
  }
  return out;
}

/** cgroup directories named by a container id, under every hierarchy's berth/ (v1 controllers and the unified one). */
export async function berthCgroups(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const ctl of await fs.readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
    const dir = join('/sys/fs/cgroup', ctl, 'berth');
    for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory() && /^[0-9a-f]{64}$/.test(e.name)) out.set(e.name, [...(out.get(e.name) ?? []), join(dir, e.name)]);
    }
  }
  return out;
}

/** Every invariant: what the store says is exactly what the kernel has. Returns the violations. */
export async function findViolations(host: TestHost, opts: InvariantOptions = {}): Promise<string[]> {
  const v: string[] = [];
  const timeoutMs = opts.timeoutMs ?? 15_000;
  let all: Inspect[];
  try {
    all = await inspectAll(host, timeoutMs);
  } catch (e) {
    return [`listing containers failed: ${(e as Error).message}`];
  }
  const running = all.filter((c) => c.State.Running);
  const runningIds = new Set(running.map((c) => c.Id));
  const short = (id: string) => id.slice(0, 12);

  // Endpoints and interfaces, addresses. Only a bridge network's endpoint has a veth end in the
  // host's namespace (an overlay's is a macvlan child inside the container's).
  const netList = await host.api('GET', '/networks').catch(() => undefined);
  const driverOf = new Map(((netList?.json ?? []) as Array<{ Name: string; Driver: string }>).map((n) => [n.Name, n.Driver]));
  const runningMacs = new Set<string>();
  let runningEndpoints = 0;
  const addresses = new Map<string, string>();
  for (const c of all) {
    const eps = Object.entries(c.NetworkSettings.Networks ?? {});
    if (c.State.Running) {
      const pin = c.NetworkSettings.SandboxKey;
      if (!pin || !existsSync(pin)) { v.push(`${short(c.Id)} ${c.Name}: running without its namespace pin`); continue; }
      const ifs = await interfacesIn(pin);
      const recorded = eps.filter(([, e]) => e.EndpointID).length;
      if (ifs.length !== recorded) v.push(`${short(c.Id)} ${c.Name}: ${ifs.length} interfaces (${ifs.join(',')}) but ${recorded} endpoints recorded`);
      for (const [net, e] of eps) {
        if (!e.IPAddress) continue;
        const holder = addresses.get(e.IPAddress);
        if (holder) v.push(`address ${e.IPAddress} held twice: ${holder} and ${c.Name} on ${net}`);
        addresses.set(e.IPAddress, `${c.Name} on ${net}`);
        if (driverOf.get(net) === 'bridge') runningEndpoints++;
        if (e.MacAddress) runningMacs.add(e.MacAddress.toLowerCase());
      }
    } else {
      if (!eps.every(([, e]) => !e.IPAddress && !e.EndpointID)) v.push(`${short(c.Id)} ${c.Name}: ${c.State.Status} but holds an address`);
      if (c.NetworkSettings.SandboxKey) v.push(`${short(c.Id)} ${c.Name}: ${c.State.Status} but has a sandbox`);
    }
  }
  v.push(...await allocationViolations(host, running));

  const mountinfo = (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n');
  const veths = await hostVeths(host);
  if (veths.length !== runningEndpoints) v.push(`${veths.length} host veths but ${runningEndpoints} running endpoints`);
  v.push(...await ingressAddressViolations(host));

  // Namespace pins, rootfs mounts, runc's containers, journals.
  const pinned = mountinfo.filter((l) => l.includes(join(host.root, 'netns') + '/')).length;
  if (pinned !== running.length) v.push(`${pinned} namespace pins mounted but ${running.length} running containers`);
  const rootfs = mountinfo.filter((l) => l.includes(join(host.root, 'containers')) && l.includes('/rootfs ')).length;
  if (rootfs !== running.length) v.push(`${rootfs} rootfs mounts but ${running.length} running containers`);
  const runc = (await run('runc', ['--root', join(host.root, 'runc'), 'list', '-q'])).stdout.split('\n').filter(Boolean);
  for (const id of runc) if (!runningIds.has(id)) v.push(`runc container ${short(id)} is not a running container`);
  for (const id of runningIds) if (!runc.includes(id)) v.push(`running container ${short(id)} unknown to runc`);
  const journals = (await fs.readdir(join(host.root, 'sandboxes')).catch(() => [] as string[])).filter((f) => f.endsWith('.json'));
  if (journals.length !== running.length) v.push(`${journals.length} sandbox journals but ${running.length} running containers`);

  // Published ports: one pub_any element per published binding of a running container.
  const pub = await host.inNetns('nft', ['list', 'map', 'ip', 'berth', 'pub_any']);
  const elements = (pub.stdout.match(/(tcp|udp|sctp) \. \d+ (?:counter packets \d+ bytes \d+ )?:/g) ?? []).length;
  let published = 0;
  for (const c of running) published += Object.values(c.NetworkSettings.Ports ?? {}).filter(Boolean).length;
  if (elements !== published) v.push(`${elements} pub_any elements but ${published} published ports of running containers`);

  // The source guard: allowances only for bridge ports that exist.
  const links = new Set((await host.inNetns('ip', ['-o', 'link', 'show'])).stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0]).filter(Boolean));
  for (const set of ['ports', 'src4', 'src6', 'macs']) {
    const listed = await host.inNetns('nft', ['-j', 'list', 'set', 'bridge', 'berth', set]);
    if (listed.code !== 0) continue;
    const elems = (JSON.parse(listed.stdout) as { nftables: Array<{ set?: { elem?: Array<string | { concat?: string[] }> } }> }).nftables.flatMap((i) => i.set?.elem ?? []);
    const stale = new Set(elems.map((e) => (typeof e === 'string' ? e : e.concat?.[0] ?? '')).filter((port) => port && !links.has(port)));
    if (stale.size) v.push(`source guard set ${set} holds ports that do not exist: ${[...stale].join(', ')}`);
  }
  // The overlays' guard: pairs only for devices that exist, and this host's own (those with an
  // ARP probe) only for running containers.
  const ovg = await host.inNetns('nft', ['-j', 'list', 'set', 'netdev', 'berth', 'src4']);
  if (ovg.code === 0) {
    const elems = (JSON.parse(ovg.stdout) as { nftables: Array<{ set?: { elem?: Array<string | { concat?: string[] }> } }> }).nftables.flatMap((i) => i.set?.elem ?? []).map((e) => (typeof e === 'string' ? [e] : e.concat ?? []));
    const goneDevs = new Set(elems.map((e) => e[0]!).filter((d) => !links.has(d)));
    if (goneDevs.size) v.push(`overlay guard holds pairs of devices that do not exist: ${[...goneDevs].join(', ')}`);
    const strays = elems.filter((e) => e[2] === '0.0.0.0' && !runningMacs.has(e[1]!.toLowerCase())).map((e) => `${e[0]} ${e[1]}`);
    if (strays.length) v.push(`overlay guard lets in local endpoints no running container has: ${strays.join(', ')}`);
  }

  // conmon: one per running container, none for anything else.
  const monitors = await conmons(host);
  for (const [id, pids] of monitors) {
    if (!runningIds.has(id)) v.push(`conmon ${pids.join(',')} monitors ${short(id)}, which is not running`);
    else if (pids.length > 1) v.push(`${short(id)} has ${pids.length} conmon processes`);
  }
  for (const id of runningIds) if (!monitors.has(id) && !opts.orphans?.has(id)) v.push(`running ${short(id)} has no conmon`);

  // cgroups: the berth/ hierarchy is shared by every berthd on the machine, so only ids of this host count.
  const cgroups = await berthCgroups();
  const known = new Set([...all.map((c) => c.Id), ...(opts.knownIds ?? [])]);
  for (const id of known) {
    const dirs = cgroups.get(id);
    if (dirs && !runningIds.has(id)) v.push(`${short(id)} is not running but has cgroups ${dirs.length}x (${dirs[0]})`);
    if (!dirs && runningIds.has(id)) v.push(`running ${short(id)} has no cgroup`);
  }

  if (opts.dnsSample) v.push(...await dnsViolations(host, running, all, opts));
  return v;
}

interface StoredNetwork {
  Id: string; Name: string; Scope: string; IPAM: { Driver: string };
  pools?: Array<{ allocated: Record<string, string> }>; pools6?: Array<{ allocated: Record<string, string> }>;
}

/**
 * Address allocations of local networks (their records on disk) against endpoints: every address
 * a record holds is held by a running container's endpoint of that id (or by an endpoint berth-cni
 * hands out), and every running endpoint's address is held in its record under its own id. An
 * allocation nobody holds is an address no container can ever get again.
 */
async function allocationViolations(host: TestHost, running: Inspect[]): Promise<string[]> {
  const v: string[] = [];
  const read = async <T>(dir: string): Promise<T[]> => {
    const out: T[] = [];
    for (const f of await fs.readdir(dir).catch(() => [] as string[])) {
      if (f.endsWith('.json')) out.push(JSON.parse(await fs.readFile(join(dir, f), 'utf8')) as T);
    }
    return out;
  };
  const holders = new Map<string, string>();
  for (const c of running) {
    for (const e of Object.values(c.NetworkSettings.Networks ?? {})) if (e.EndpointID) holders.set(e.EndpointID, c.Name);
  }
  for (const e of await read<{ endpointId: string; containerId: string }>(join(host.root, 'cni', 'provided'))) holders.set(e.endpointId, `CNI ${e.containerId}`);
  // Only local networks of the default IPAM keep their allocations in the record on disk.
  const kept = (await read<StoredNetwork>(join(host.root, 'networks'))).filter((n) => n.Scope === 'local' && (n.IPAM.Driver || 'default') === 'default' && n.pools?.length);
  const allocated = new Set<string>();
  for (const n of kept) {
    for (const pool of [...(n.pools ?? []), ...(n.pools6 ?? [])]) {
      for (const [ip, owner] of Object.entries(pool.allocated ?? {})) {
        allocated.add(`${n.Name} ${owner} ${ip}`);
        if (!holders.has(owner)) v.push(`network ${n.Name}: ${ip} is allocated to endpoint ${owner.slice(0, 12)}, which no running container or CNI attachment holds`);
      }
    }
  }
  const names = new Set(kept.map((n) => n.Name));
  for (const c of running) {
    for (const [net, e] of Object.entries(c.NetworkSettings.Networks ?? {})) {
      if (names.has(net) && e.EndpointID && e.IPAddress && !allocated.has(`${net} ${e.EndpointID} ${e.IPAddress}`)) {
        v.push(`${c.Name} on ${net}: ${e.IPAddress} is not allocated to its endpoint in the network's record`);
      }
    }
  }
  return v;
}

/** Throws one error naming every violation. */
export async function checkInvariants(host: TestHost, opts: InvariantOptions = {}): Promise<void> {
  const v = await findViolations(host, opts);
  if (v.length) throw new Error(`invariants broken:\n  ${v.join('\n  ')}`);
}

async function dnsViolations(host: TestHost, running: Inspect[], all: Inspect[], opts: InvariantOptions): Promise<string[]> {
  const v: string[] = [];
  const sample = opts.dnsSample ?? 0;
  const networks = new Set(running.flatMap((c) => Object.keys(c.NetworkSettings.Networks ?? {})));
  for (const net of networks) {
    if (['bridge', 'host', 'none'].includes(net)) continue;
    const members = running.filter((c) => c.NetworkSettings.Networks[net]?.IPAddress);
    if (members.length < 2) continue;
    const prober = members[0]!;
    const targets = members.slice(1, 1 + sample);
    for (const t of targets) {
      const name = t.Name.replace(/^\//, '');
      const want = t.NetworkSettings.Networks[net]!.IPAddress;
      for (const n of [name, ...(t.NetworkSettings.Networks[net]!.Aliases ?? []).filter((a) => a !== name && !t.Id.startsWith(a))].slice(0, 2)) {
        try {
          const r = await lookup(host, prober.Id, n);
          if (r.rcode !== 'NOERROR' || !r.addrs.includes(want)) v.push(`dns: ${n} on ${net} from ${prober.Name}: ${r.rcode} ${r.addrs.join(',')} (want ${want})`);
        } catch (e) {
          v.push(`dns: probe of ${n} on ${net} failed: ${(e as Error).message}`);
        }
      }
    }
    const gone = [...(opts.removedNames ?? []), ...all.filter((c) => !c.State.Running).map((c) => c.Name.replace(/^\//, ''))];
    for (const n of gone.slice(-sample)) {
      try {
        const r = await lookup(host, prober.Id, n);
        if (r.rcode !== 'NXDOMAIN') v.push(`dns: ${n} (removed or not running) on ${net}: ${r.rcode} ${r.addrs.join(',')}, want NXDOMAIN`);
      } catch (e) {
        v.push(`dns: probe of removed ${n} on ${net} failed: ${(e as Error).message}`);
      }
    }
  }
  return v;
}
