/**
 * The topology the page draws, built as plain data from the Engine API's own answers (info,
 * networks, containers, nodes, policy). Pure: no I/O, so it is tested without a daemon, and the
 * page gets one JSON document per change instead of re-deriving Docker's shapes in the browser.
 */

/** The parts of Docker's API answers the page uses (anything else is ignored). */
export interface ApiInfo { Name?: string; ServerVersion?: string; Swarm?: { LocalNodeState?: string; NodeID?: string; NodeAddr?: string; ControlAvailable?: boolean } }
export interface ApiNetwork {
  Id: string; Name: string; Driver: string; Scope: string; Internal?: boolean; Attachable?: boolean; Ingress?: boolean; EnableIPv6?: boolean;
  IPAM?: { Config?: Array<{ Subnet?: string; Gateway?: string }> | null };
  Labels?: Record<string, string> | null;
  Peers?: Array<{ Name: string; IP: string }>;
}
export interface ApiEndpointSettings {
  NetworkID?: string; EndpointID?: string; IPAddress?: string; IPPrefixLen?: number; GlobalIPv6Address?: string; MacAddress?: string; Gateway?: string; Aliases?: string[] | null;
}
export interface ApiContainer {
  Id: string; Names?: string[]; Image?: string; State?: string; Status?: string;
  Ports?: Array<{ IP?: string; PrivatePort: number; PublicPort?: number; Type: string }>;
  Labels?: Record<string, string> | null;
  HostConfig?: { NetworkMode?: string };
  NetworkSettings?: { Networks?: Record<string, ApiEndpointSettings> | null };
}
export interface ApiNode {
  ID: string; Spec?: { Role?: string; Availability?: string }; Description?: { Hostname?: string };
  Status?: { State?: string; Addr?: string }; ManagerStatus?: { Leader?: boolean; Addr?: string } | null;
}
export interface ApiService {
  ID: string;
  Spec: { Name: string; Mode?: { Replicated?: { Replicas?: number }; Global?: object }; TaskTemplate?: { Networks?: Array<{ Target: string }> } };
  Endpoint?: { VirtualIPs?: Array<{ NetworkID: string; Addr: string }>; Ports?: Array<{ Protocol?: string; TargetPort?: number; PublishedPort?: number; PublishMode?: string }> };
}
export interface ApiTask { ID: string; ServiceID: string; DesiredState?: string; Status?: { State?: string } }
interface ApiPolicyDirection { Isolated: boolean; IsolatedBy: string[]; Denied: number; Rules: Array<{ Label: string; Peer: string; Ports: string; Matched: number }> }
export interface ApiPolicy { Id: string; Name: string; Endpoints: Array<{ Network: string; NetworkID: string; Ingress: ApiPolicyDirection; Egress: ApiPolicyDirection }> }

export interface RawState { info: ApiInfo; networks: ApiNetwork[]; containers: ApiContainer[]; nodes?: ApiNode[]; policy?: ApiPolicy[]; services?: ApiService[]; tasks?: ApiTask[] }

export interface HostView { id: string; hostname: string; role: string; state: string; availability: string; addr: string; leader: boolean; self: boolean }
export interface NetworkView {
  id: string; name: string; driver: string; scope: string; internal: boolean; attachable: boolean; ingress: boolean; ipv6: boolean;
  builtin: boolean; subnets: Array<{ subnet: string; gateway: string }>; policyLabels: Record<string, string>;
  /** Hosts with endpoints on a swarm network (Docker's Peers). */
  peers: Array<{ name: string; ip: string }>;
}
export interface EndpointView {
  networkId: string; network: string; ip: string; prefix: number; ip6: string; mac: string; aliases: string[];
  /** Directions (ingress, egress) in which a policy makes this endpoint default-deny. */
  isolated: string[];
  denied: number;
}
export interface ContainerView {
  id: string; name: string; image: string; state: string; status: string; networkMode: string;
  /** Published ports as `0.0.0.0:8080→80/tcp`, exposed-only ones as `80/tcp`. */
  ports: string[];
  policyLabels: Record<string, string>;
  endpoints: EndpointView[];
  /** `container:NAME` mode: the container whose namespace this one shares. */
  sharesWith?: string;
  /** The swarm service whose task this container runs, and its slot's name (`web.1`). */
  task?: { service: string; name: string };
}
export interface ServiceView {
  id: string; name: string; mode: 'replicated' | 'global'; replicas?: number;
  /** Tasks running and desired running. */
  running: number;
  /** Its networks (and its VIP on each, where it has one). */
  networks: Array<{ networkId: string; vip: string }>;
  /** Published ports as `8080→80/tcp (ingress)`. */
  ports: string[];
}
export interface Topology { host: { name: string; version: string; swarm: string }; hosts: HostView[]; networks: NetworkView[]; containers: ContainerView[]; services: ServiceView[] }

const BUILTIN = ['bridge', 'host', 'none'];
const POLICY_LABEL = /^berth\.policy\./;

function policyLabels(labels: Record<string, string> | null | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(labels ?? {}).filter(([k]) => POLICY_LABEL.test(k)).sort(([a], [b]) => a.localeCompare(b)));
}

export function formatPort(p: { IP?: string; PrivatePort: number; PublicPort?: number; Type: string }): string {
  if (!p.PublicPort) return `${p.PrivatePort}/${p.Type}`;
  const ip = p.IP && p.IP.includes(':') ? `[${p.IP}]` : p.IP || '0.0.0.0';
  return `${ip}:${p.PublicPort}→${p.PrivatePort}/${p.Type}`;
}

/** The default bridge first (Docker's own), user networks by name, then host and none. */
function networkOrder(a: NetworkView, b: NetworkView): number {
  const rank = (n: NetworkView) => (n.name === 'bridge' && n.builtin ? 0 : n.builtin ? 2 : 1);
  return rank(a) - rank(b) || a.name.localeCompare(b.name);
}

export function buildTopology(raw: RawState): Topology {
  const networks: NetworkView[] = raw.networks.map((n) => ({
    id: n.Id, name: n.Name, driver: n.Driver, scope: n.Scope, internal: !!n.Internal, attachable: !!n.Attachable, ingress: !!n.Ingress, ipv6: !!n.EnableIPv6,
    builtin: BUILTIN.includes(n.Name) && n.Scope === 'local',
    subnets: (n.IPAM?.Config ?? []).filter((c) => c.Subnet).map((c) => ({ subnet: c.Subnet!, gateway: c.Gateway ?? '' })),
    policyLabels: policyLabels(n.Labels),
    peers: (n.Peers ?? []).map((p) => ({ name: p.Name, ip: p.IP })).sort((a, b) => a.name.localeCompare(b.name)),
  })).sort(networkOrder);
  const networkById = new Map(networks.map((n) => [n.id, n]));
  const policyOf = new Map<string, Map<string, { isolated: string[]; denied: number }>>();
  for (const c of raw.policy ?? []) {
    const eps = new Map<string, { isolated: string[]; denied: number }>();
    for (const e of c.Endpoints) {
      eps.set(e.NetworkID, {
        isolated: [e.Ingress.Isolated && 'ingress', e.Egress.Isolated && 'egress'].filter((w): w is string => !!w),
        denied: e.Ingress.Denied + e.Egress.Denied,
      });
    }
    policyOf.set(c.Id, eps);
  }
  const nameOf = new Map(raw.containers.map((c) => [c.Id, (c.Names?.[0] ?? c.Id).replace(/^\//, '')]));
  const containers: ContainerView[] = raw.containers.map((c) => {
    const mode = c.HostConfig?.NetworkMode ?? 'default';
    const endpoints: EndpointView[] = Object.entries(c.NetworkSettings?.Networks ?? {}).map(([name, ep]) => {
      const networkId = ep.NetworkID || networks.find((n) => n.name === name)?.id || '';
      const pol = policyOf.get(c.Id)?.get(networkId);
      return {
        networkId, network: networkById.get(networkId)?.name ?? name, ip: ep.IPAddress ?? '', prefix: ep.IPPrefixLen ?? 0, ip6: ep.GlobalIPv6Address ?? '',
        mac: ep.MacAddress ?? '', aliases: (ep.Aliases ?? []).filter((a) => !c.Id.startsWith(a)), isolated: pol?.isolated ?? [], denied: pol?.denied ?? 0,
      };
    }).sort((a, b) => {
      const ia = networks.findIndex((n) => n.id === a.networkId);
      const ib = networks.findIndex((n) => n.id === b.networkId);
      return ia - ib;
    });
    const shared = /^container:(.+)$/.exec(mode)?.[1];
    const service = c.Labels?.['com.docker.swarm.service.name'];
    const taskName = c.Labels?.['com.docker.swarm.task.name'];
    return {
      id: c.Id, name: nameOf.get(c.Id)!, image: c.Image ?? '', state: c.State ?? '', status: c.Status ?? '', networkMode: mode,
      ports: (c.Ports ?? []).map(formatPort).sort(), policyLabels: policyLabels(c.Labels), endpoints,
      ...(shared ? { sharesWith: nameOf.get(shared) ?? [...nameOf].find(([id]) => id.startsWith(shared))?.[1] ?? shared } : {}),
      // A task's container is named SERVICE.SLOT.TASKID: the page shows SERVICE.SLOT.
      ...(service && taskName ? { task: { service, name: taskName.split('.').slice(0, -1).join('.') || taskName } } : {}),
    };
  }).sort((a, b) => a.name.localeCompare(b.name));
  const swarm = raw.info.Swarm?.LocalNodeState ?? 'inactive';
  const selfId = raw.info.Swarm?.NodeID ?? '';
  const hosts: HostView[] = raw.nodes?.length
    ? raw.nodes.map((n) => ({
      id: n.ID, hostname: n.Description?.Hostname ?? n.ID.slice(0, 12), role: n.Spec?.Role ?? '', state: n.Status?.State ?? '',
      availability: n.Spec?.Availability ?? '', addr: n.Status?.Addr ?? '', leader: !!n.ManagerStatus?.Leader, self: n.ID === selfId,
    })).sort((a, b) => Number(b.self) - Number(a.self) || a.hostname.localeCompare(b.hostname))
    : [{ id: selfId, hostname: raw.info.Name ?? '', role: swarm === 'active' ? 'worker' : '', state: 'ready', availability: '', addr: raw.info.Swarm?.NodeAddr ?? '', leader: false, self: true }];
  return { host: { name: raw.info.Name ?? '', version: raw.info.ServerVersion ?? '', swarm }, hosts, networks, containers, services: serviceViews(raw) };
}

function serviceViews(raw: RawState): ServiceView[] {
  return (raw.services ?? []).map((s) => {
    // A VIP on the service's own networks: its VIP on ingress is the mesh's, reached by the
    // published ports (shown on the ingress lane), never by its address.
    const own = new Set((s.Spec.TaskTemplate?.Networks ?? []).map((n) => n.Target));
    const vips = new Map((s.Endpoint?.VirtualIPs ?? []).filter((v) => own.has(v.NetworkID)).map((v) => [v.NetworkID, v.Addr.split('/')[0]!]));
    const nets = [...new Set([...(s.Spec.TaskTemplate?.Networks ?? []).map((n) => n.Target), ...vips.keys()])];
    const replicas = s.Spec.Mode?.Replicated ? s.Spec.Mode.Replicated.Replicas ?? 1 : undefined;
    return {
      id: s.ID, name: s.Spec.Name, mode: replicas === undefined ? 'global' as const : 'replicated' as const, ...(replicas !== undefined ? { replicas } : {}),
      running: (raw.tasks ?? []).filter((t) => t.ServiceID === s.ID && t.DesiredState === 'running' && t.Status?.State === 'running').length,
      networks: nets.map((networkId) => ({ networkId, vip: vips.get(networkId) ?? '' })),
      // A host-mode port with no number is each task's own free port ("any").
      ports: (s.Endpoint?.Ports ?? []).map((p) => `${p.PublishedPort || 'any'}→${p.TargetPort}/${p.Protocol ?? 'tcp'} (${p.PublishMode ?? 'ingress'})`),
    };
  }).sort((a, b) => a.name.localeCompare(b.name));
}

/** What the page's side panel shows of a container: a digest of inspect and of its policy. */
export interface InspectSummary {
  id: string; name: string; image: string; imageId: string; state: string; running: boolean; pid: number; exitCode: number;
  created: string; startedAt: string; finishedAt: string; command: string; hostname: string; networkMode: string;
  restartPolicy: string; ports: string[]; labels: Record<string, string>;
  mounts: Array<{ type: string; source: string; destination: string; rw: boolean }>;
  endpoints: Array<{ network: string; ip: string; prefix: number; gateway: string; ip6: string; mac: string; aliases: string[]; endpointId: string }>;
  policy: ApiPolicy['Endpoints'];
}

export function inspectSummary(c: any, policy?: ApiPolicy): InspectSummary {
  const portMap = (c.NetworkSettings?.Ports ?? {}) as Record<string, Array<{ HostIp: string; HostPort: string }> | null>;
  const ports = Object.entries(portMap).flatMap(([key, binds]) => {
    const [port, proto] = key.split('/');
    return binds?.length
      ? binds.map((b) => formatPort({ IP: b.HostIp, PublicPort: Number(b.HostPort), PrivatePort: Number(port), Type: proto ?? 'tcp' }))
      : [key];
  }).sort();
  const rp = c.HostConfig?.RestartPolicy;
  return {
    id: c.Id, name: String(c.Name ?? '').replace(/^\//, ''), image: c.Config?.Image ?? '', imageId: c.Image ?? '',
    state: c.State?.Status ?? '', running: !!c.State?.Running, pid: c.State?.Pid ?? 0, exitCode: c.State?.ExitCode ?? 0,
    created: c.Created ?? '', startedAt: c.State?.StartedAt ?? '', finishedAt: c.State?.FinishedAt ?? '',
    command: [c.Path, ...(c.Args ?? [])].filter((x) => x !== undefined && x !== '').join(' '),
    hostname: c.Config?.Hostname ?? '', networkMode: c.HostConfig?.NetworkMode ?? '',
    restartPolicy: rp?.Name ? `${rp.Name}${rp.MaximumRetryCount ? `:${rp.MaximumRetryCount}` : ''}` : 'no',
    ports, labels: c.Config?.Labels ?? {},
    mounts: (c.Mounts ?? []).map((m: any) => ({ type: m.Type, source: m.Name ?? m.Source, destination: m.Destination, rw: !!m.RW })),
    endpoints: Object.entries((c.NetworkSettings?.Networks ?? {}) as Record<string, any>).map(([name, e]) => ({
      network: name, ip: e.IPAddress ?? '', prefix: e.IPPrefixLen ?? 0, gateway: e.Gateway ?? '', ip6: e.GlobalIPv6Address ?? '',
      mac: e.MacAddress ?? '', aliases: e.Aliases ?? [], endpointId: e.EndpointID ?? '',
    })),
    policy: policy?.Endpoints ?? [],
  };
}
