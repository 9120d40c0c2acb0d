import { existsSync, promises as fs } from 'node:fs';
import { basename, extname, isAbsolute, join } from 'node:path';
import type { CniRunner } from '../cni/runner.js';
import { endpointAddresses, parseConfList, type ConfList } from '../cni/spec.js';
import { ipJson } from '../kernel/netns.js';
import { ApiError, BadRequestError } from '../util/errors.js';
import { SharedExclusive } from '../util/serial.js';
import type { CreateContext, EndpointJoin, EndpointLeave, JoinResult, NetworkDriver } from './driver.js';
import type { NetworkRecord } from './types.js';

/** The one driver option: the configuration list, by its network name or by a file's absolute path. */
export const OPT_CONFLIST = 'cni.conflist';

/** Files libcni reads as configurations, in this order within a directory. */
const CONF_EXTENSIONS = ['.conflist', '.conf', '.json'];

/**
 * The `cni` network driver: a container's interface on the network is whatever a CNI
 * configuration list makes of it, run by berth's CNI runtime (src/cni/runner.ts). The list's
 * IPAM plugin gives the addresses (ownsAddresses), its plugins do their own forwarding, NAT and
 * ports (no host firewall of berth's: the portmap plugin gets -p through the portMappings
 * capability). berth keeps what is its own on every network: the sandbox, the embedded DNS,
 * inspect.
 */
export class CniDriver implements NetworkDriver {
  readonly name = 'cni';
  readonly avoidsRoutedSubnets = true;
  readonly publishes = false;
  readonly hostFirewall = false;
  readonly ownsAddresses = true;
  /** The plugins' objects are theirs: `--cleanup` leaves them to the DELs of the containers' teardown. */
  readonly external = true;

  /** ADDs share it; a GC pass holds it alone, so no attachment is made between its valid list and the plugins' GC. */
  private readonly gate = new SharedExclusive();

  constructor(private readonly runner: CniRunner, private readonly confDirs: string[]) {}

  async configure(n: NetworkRecord, _ctx: CreateContext): Promise<void> {
    for (const k of Object.keys(n.Options)) if (k !== OPT_CONFLIST) throw new BadRequestError(`unknown cni driver option ${k} (the one option is ${OPT_CONFLIST})`);
    const ref = n.Options[OPT_CONFLIST];
    if (!ref) throw new BadRequestError(`cni networks need a configuration list: -o ${OPT_CONFLIST}=NAME (looked for in ${this.confDirs.join(', ')}) or an absolute path`);
    // Whether traffic may leave the network is the list's business (its plugins' NAT and routes).
    if (n.Internal) throw new BadRequestError('cni networks cannot be --internal: whether traffic leaves the network is up to the configuration list\'s plugins');
    const { list, source } = await this.findList(ref);
    let version: string;
    try {
      version = await this.runner.prepare(list);
    } catch (e) {
      throw new BadRequestError(`CNI configuration ${list.name} (${source}): ${(e as Error).message}`);
    }
    // A 1.1.0 list's plugins are asked whether they are ready (at a restart, collectGarbage asks
    // again once the API answers: berth-cni in a list calls it).
    await this.runner.status(list, version).catch((e: Error) => {
      throw new ApiError(503, `CNI configuration ${list.name} (${source}) is not ready: ${e.message}`);
    });
    n.cni = { source, list, version };
    n.IPAM.Config = ipamConfig(list);
  }

  /** A list by absolute path, or the first file of a configuration directory whose list has that name (or whose file name it is). */
  private async findList(ref: string): Promise<{ list: ConfList; source: string }> {
    if (ref.includes('/')) {
      if (!isAbsolute(ref)) throw new BadRequestError(`${OPT_CONFLIST}: a path must be absolute (${ref})`);
      return { list: await this.read(ref), source: ref };
    }
    for (const dir of this.confDirs) {
      const files = (await fs.readdir(dir).catch(() => [] as string[])).filter((f) => CONF_EXTENSIONS.includes(extname(f))).sort();
      for (const f of files) {
        const path = join(dir, f);
        const list = await this.read(path).catch(() => undefined);
        if (list && (list.name === ref || basename(f, extname(f)) === ref)) return { list, source: path };
      }
    }
    throw new BadRequestError(`CNI configuration ${ref} not found in ${this.confDirs.join(', ')}`);
  }

  private async read(path: string): Promise<ConfList> {
    let text: string;
    try {
      text = await fs.readFile(path, 'utf8');
    } catch (e) {
      throw new BadRequestError(`CNI configuration ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
    try {
      return parseConfList(text, path);
    } catch (e) {
      throw new BadRequestError((e as Error).message);
    }
  }

  /** CNI has no network of its own to make (INIT is spec 1.2's). */
  async ensureNetwork(n: NetworkRecord): Promise<void> {
    cniOf(n);
  }

  /** Leftovers of the network (DELs that failed) are DEL'd again, then the plugins collect with nothing valid. */
  async deleteNetwork(n: NetworkRecord, _remaining: NetworkRecord[]): Promise<void> {
    const c = cniOf(n);
    for (const e of (await this.runner.all()).filter((x) => x.owner === n.Id)) {
      await this.runner.del(e.key).catch((x: Error) => console.error(`berthd: network ${n.Name}: ${x.message}`));
    }
    await this.runner.gc(c.list, c.version, []).catch((e: Error) => console.error(`berthd: network ${n.Name}: GC: ${e.message}`));
  }

  private key(n: NetworkRecord, endpointId: string): string {
    return `${n.Id}-${endpointId}`;
  }

  async join(n: NetworkRecord, j: EndpointJoin): Promise<JoinResult> {
    const c = cniOf(n);
    const containerId = j.owner?.containerId ?? j.endpointId;
    const carriesDefault = j.gateway !== undefined;
    const runtime: Record<string, unknown> = {};
    // Published ports go to the endpoint that carries the default route, as Docker's do.
    const mappings = carriesDefault ? portMappings(j.ports) : [];
    if (mappings.length) runtime.portMappings = mappings;
    if (j.requestedMac) runtime.mac = j.mac;
    // The names CRI runtimes pass (podman and Kubernetes), so plugins that log or key by them find them.
    const args = { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'berth', K8S_POD_NAME: j.owner?.name ?? containerId.slice(0, 12), K8S_POD_INFRA_CONTAINER_ID: containerId };
    let result;
    try {
      result = await this.gate.withShared(() => this.runner.add(this.key(n, j.endpointId), n.Id, c.list, c.version, { containerId, netns: j.netnsPath, ifname: j.ifname, args, runtime }));
    } catch (e) {
      throw new ApiError(500, `failed to set up ${j.owner?.name ?? 'the container'} on CNI network ${n.Name}: ${(e as Error).message}`);
    }
    const got = endpointAddresses(result, j.ifname, j.netnsPath);
    let mac = got.mac;
    if (!mac) {
      const link = await ipJson<Array<{ address?: string }>>(j.netnsPath, ['link', 'show', 'dev', j.ifname]).catch(() => []);
      mac = link[0]?.address ?? '';
    }
    return {
      mac,
      lease: {
        ip: got.ip ?? '', prefix: got.prefix ?? 0, gateway: got.gateway ?? '',
        ...(got.ip6 ? { ip6: got.ip6, prefix6: got.prefix6 ?? 128, gateway6: got.gateway6 ?? '' } : {}),
      },
      cni: result,
    };
  }

  async leave(n: NetworkRecord, ep: EndpointLeave): Promise<void> {
    await this.runner.del(this.key(n, ep.endpointId), ep.netnsPath);
  }

  /**
   * After a restart: every cached attachment whose endpoint is gone is DEL'd (a DEL that failed,
   * or one a crash cut short), the rest are CHECKed (problems are logged: the container runs on),
   * and 1.1.0 lists' plugins collect what belongs to none of the valid attachments.
   */
  collectGarbage(networks: NetworkRecord[], live: (endpointId: string) => boolean): Promise<void> {
    return this.gate.withExclusive(() => this.collect(networks, live));
  }

  private async collect(networks: NetworkRecord[], live: (endpointId: string) => boolean): Promise<void> {
    const mine = new Map(networks.filter((n) => n.Driver === this.name).map((n) => [n.Id, n]));
    const valid = new Map<string, Array<{ containerID: string; ifname: string }>>();
    for (const e of await this.runner.all()) {
      const endpointId = e.key.slice(e.owner.length + 1);
      if (!mine.has(e.owner) || !live(endpointId) || e.deleteFailed) {
        // The namespace may be gone too: the plugins then free what is outside it.
        const netns = e.netns && existsSync(e.netns) ? e.netns : '';
        await this.runner.del(e.key, netns).catch((x: Error) => console.error(`berthd: CNI DEL of a stale attachment on ${e.list.name}: ${x.message}`));
        continue;
      }
      (valid.get(e.owner) ?? valid.set(e.owner, []).get(e.owner)!).push({ containerID: e.containerId, ifname: e.ifname });
      if (e.result) await this.runner.check(e.key).catch((x: Error) => console.error(`berthd: CNI CHECK of ${e.containerId.slice(0, 12)} on ${e.list.name}: ${x.message}`));
    }
    for (const n of mine.values()) {
      const c = cniOf(n);
      await this.runner.status(c.list, c.version).catch((x: Error) => console.error(`berthd: CNI STATUS of ${c.list.name}: ${x.message}`));
      await this.runner.gc(c.list, c.version, valid.get(n.Id) ?? []).catch((x: Error) => console.error(`berthd: CNI GC on ${c.list.name}: ${x.message}`));
    }
  }
}

function cniOf(n: NetworkRecord): NonNullable<NetworkRecord['cni']> {
  if (!n.cni) throw new ApiError(500, `network ${n.Name} has no CNI configuration recorded`);
  return n.cni;
}

/** The subnets the list's IPAM plugin hands out (host-local's ranges or subnet), for inspect's IPAM.Config. */
export function ipamConfig(list: ConfList): Array<{ Subnet: string; Gateway?: string; IPRange?: string }> {
  const out: Array<{ Subnet: string; Gateway?: string }> = [];
  for (const p of list.plugins) {
    const ipam = p.ipam as { subnet?: unknown; gateway?: unknown; ranges?: unknown } | undefined;
    if (!ipam || typeof ipam !== 'object') continue;
    const ranges: unknown[] = Array.isArray(ipam.ranges) ? ipam.ranges.flat() : [ipam];
    for (const r of ranges) {
      const { subnet, gateway } = (r ?? {}) as { subnet?: unknown; gateway?: unknown };
      if (typeof subnet === 'string') out.push({ Subnet: subnet, ...(typeof gateway === 'string' ? { Gateway: gateway } : {}) });
    }
  }
  return out;
}

/** -p as the portMappings capability carries it (the portmap plugin's input). */
export function portMappings(ports: EndpointJoin['ports']): Array<{ hostPort: number; containerPort: number; protocol: string; hostIP?: string }> {
  const out: Array<{ hostPort: number; containerPort: number; protocol: string; hostIP?: string }> = [];
  for (const [key, list] of Object.entries(ports?.bindings ?? {})) {
    const [port, protocol = 'tcp'] = key.split('/');
    for (const b of list ?? []) {
      const hostPort = Number(b.HostPort);
      // A range or an unbound port (-p 80) needs a port chosen by berth's own mapper: CNI's portmap takes fixed ones.
      if (!Number.isInteger(hostPort) || hostPort <= 0) throw new BadRequestError(`CNI networks publish fixed host ports only (-p HOSTPORT:${port}), not ${b.HostPort || 'a port berth picks'}`);
      out.push({ hostPort, containerPort: Number(port), protocol, ...(b.HostIp ? { hostIP: b.HostIp } : {}) });
    }
  }
  return out;
}
