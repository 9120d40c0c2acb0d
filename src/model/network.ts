/**
 * The plain data that crosses the line between the engine and the network layer (and the DNS and
 * the API views): what a container asks of networking and what it was given. Neither side imports
 * the other; both import this, as libnetwork's `types` package sits under its callers and drivers.
 */

/** Docker's resolver address inside every container on a network with the embedded DNS. */
export const RESOLVER_ADDRESS = '127.0.0.11';

/** Docker's default network: addresses and NAT, but no name resolution and no aliases. */
export const DEFAULT_BRIDGE = 'bridge';

/** The networks every daemon has and no user may create or remove. */
export const PREDEFINED = ['bridge', 'host', 'none'];

/** One container's membership of one network: what the user asked for and, while running, what it got. */
export interface EndpointState {
  NetworkID: string;
  IPAMConfig: { IPv4Address?: string; IPv6Address?: string } | null;
  Links: string[] | null;
  Aliases: string[] | null;
  EndpointID: string;
  Gateway: string;
  IPAddress: string;
  IPPrefixLen: number;
  MacAddress: string;
  /** Interface name inside the container (eth0, eth1, …) while connected. */
  ifname: string;
  /** On dual-stack networks, while connected. */
  GlobalIPv6Address?: string;
  GlobalIPv6PrefixLen?: number;
  IPv6Gateway?: string;
  /** Set with --mac-address. */
  requestedMac?: string;
  /** On CNI networks, while connected: the list's result (interfaces, addresses, routes, DNS), shown in inspect. */
  CNI?: { cniVersion: string; interfaces?: unknown[]; ips?: unknown[]; routes?: unknown[]; dns?: unknown };
}

/** One published port as the kernel has it: host side → container side. */
export interface PortMapping {
  proto: 'tcp' | 'udp' | 'sctp';
  /** '' for every address of the host. */
  hostIp: string;
  hostPort: number;
  containerIp: string;
  containerPort: number;
  /** 6 for an IPv6 mapping (host and container addresses are IPv6); IPv4 when absent. */
  family?: 6;
}

/** HostConfig.PortBindings in Docker's shape. */
export type PortBindings = Record<string, Array<{ HostIp?: string; HostPort?: string }> | null>;

/**
 * What the network layer needs to know of a container to give it a sandbox: a narrow copy of the
 * engine's record, never the record itself.
 */
export interface SandboxSpec {
  id: string;
  /** The container's name without the leading slash (error messages). */
  name: string;
  hostname: string;
  domainname: string;
  /** HostConfig.NetworkMode: default, bridge, host, none, container:<id> or a network name/id. */
  mode: string;
  endpoints: Record<string, EndpointState>;
  ports: { bindings: PortBindings; publishAll: boolean; exposed: string[] };
  dns: { servers: string[]; search: string[]; options: string[] };
  extraHosts: string[];
  /** Legacy --link on the default bridge, resolved by the engine: `NAMES:IP` lines for /etc/hosts. */
  linkHosts: string[];
  /** Where the sandbox writes hosts, hostname and resolv.conf (the container's own directory). */
  etcDir: string;
  /** The container's labels: network policy reads its own (berth.policy.*). */
  labels?: Record<string, string>;
}

/** The files the runtime bind-mounts into the container. */
export interface EtcFiles { hosts: string; hostname: string; resolvConf: string }

/** What a sandbox gave a container: the engine records it and hands the namespace to the runtime. */
export interface SandboxState {
  /** undefined: the host's own namespace (host mode). */
  netnsPath?: string;
  endpoints: Record<string, EndpointState>;
  published: PortMapping[];
  etcFiles: EtcFiles;
}

/** A running container's sandbox as the engine recorded it, to adopt or to tear down. */
export interface SandboxRef {
  id: string;
  mode: string;
  netnsPath: string;
  endpoints: Record<string, EndpointState>;
  published: PortMapping[];
  /** For network policy, rebuilt at start from the running containers. */
  name?: string;
  labels?: Record<string, string>;
}

/** Network facts the engine may show or decide on, without the network's record. */
export interface NetworkSummary { Id: string; Name: string; Driver: string }

/**
 * The network layer as the engine sees it. The engine owns container records and calls these at
 * the points of a container's life; it never reaches below.
 */
export interface NetworkService {
  /** Checks a NetworkMode at create time, so a bad one fails before anything exists. */
  validateMode(mode: string): void;
  /** Checks HostConfig.PortBindings at create time. */
  validatePortBindings(bindings: PortBindings): void;
  /** Checks a container's policy labels (berth.policy.*) at create time: a bad one is a 400. */
  validateLabels?(labels: Record<string, string>): void;
  /** The endpoints a new container starts with, from its NetworkMode and EndpointsConfig. */
  initialEndpoints(mode: string, endpointsConfig: Record<string, unknown>, macAddress?: string, swarmTask?: boolean): Record<string, EndpointState>;
  summary(ref: string): NetworkSummary;
  /** Makes the sandbox: namespace, endpoints, resolver, published ports, /etc files. All or nothing. */
  setUp(spec: SandboxSpec, sharedWith?: { netnsPath: string; etcDir: string }): Promise<SandboxState>;
  /** Frees everything a sandbox holds. Safe to call twice; collects errors instead of stopping. */
  tearDown(ref: SandboxRef): Promise<void>;
  /** Joins one more network; a running container (netnsPath given) gets its interface now. */
  connect(spec: SandboxSpec, netnsPath: string | undefined, published: PortMapping[], networkRef: string, cfg: Record<string, unknown>, swarmTask?: boolean): Promise<{ endpoint: EndpointState; published: PortMapping[] }>;
  /** `saved`: the network's record, written while the caller writes the container's. */
  disconnect(spec: SandboxSpec, netnsPath: string | undefined, published: PortMapping[], networkRef: string): Promise<{ published: PortMapping[]; saved?: Promise<void> }>;
  /**
   * The engine recorded a change of this container's endpoints or names (start, stop, connect,
   * rename): views derived from the records (the embedded DNS) must follow now.
   */
  endpointsRecorded(containerId: string, networkIds: string[]): void;
}

/** `--link TARGET[:ALIAS]`: the target's name and the alias it is known by (the target's own name without one). */
export function parseLink(link: string): { target: string; alias: string } {
  const i = link.indexOf(':');
  const target = (i < 0 ? link : link.slice(0, i)).replace(/^\//, '');
  const alias = i < 0 ? target : link.slice(i + 1).split('/').pop() ?? '';
  return { target, alias };
}
