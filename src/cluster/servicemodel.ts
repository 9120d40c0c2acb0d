import { BadRequestError } from '../util/errors.js';
import { rpcError } from './errors.js';
import { normalisePorts, withoutZeroPort, type PortConfig } from './publish.js';

/**
 * Services and tasks as the store holds them, in Docker's JSON shapes (API v1.41 Service and Task),
 * and the pure checks around them: the spec a create or update may carry, placement constraints.
 * Nothing here touches the store or the kernel.
 */

export interface ContainerSpec {
  Image: string;
  Command?: string[];
  Args?: string[];
  Env?: string[];
  Labels?: Record<string, string>;
  Hostname?: string;
  /** As a container's (Test, Interval, Timeout, Retries, StartPeriod): a task runs once healthy. */
  Healthcheck?: { Test?: string[]; Interval?: number; Timeout?: number; Retries?: number; StartPeriod?: number };
  Dir?: string;
  User?: string;
  StopGracePeriod?: number;
}

export interface RestartPolicy { Condition?: 'none' | 'on-failure' | 'any'; Delay?: number; MaxAttempts?: number; Window?: number }

export interface ServiceSpec {
  Name: string;
  Labels?: Record<string, string>;
  TaskTemplate: {
    ContainerSpec: ContainerSpec;
    RestartPolicy?: RestartPolicy;
    Placement?: { Constraints?: string[] };
    Networks?: Array<{ Target: string; Aliases?: string[] }>;
    ForceUpdate?: number;
    [k: string]: unknown;
  };
  Mode: { Replicated?: { Replicas?: number }; Global?: Record<string, never> };
  EndpointSpec?: { Mode?: 'vip' | 'dnsrr'; Ports?: PortConfig[] };
  UpdateConfig?: UpdateConfig;
  RollbackConfig?: UpdateConfig;
  [k: string]: unknown;
}

/** How tasks of an older spec are replaced (Docker's --update-* flags); Delay and Monitor in ns. */
export interface UpdateConfig {
  Parallelism?: number;
  Delay?: number;
  FailureAction?: 'pause' | 'continue' | 'rollback';
  Monitor?: number;
  MaxFailureRatio?: number;
  Order?: 'stop-first' | 'start-first';
}

/** swarmkit's defaults for a spec that leaves the update config out. */
export function updateConfigOf(spec: ServiceSpec, rollback = false): Required<UpdateConfig> {
  const c = (rollback ? spec.RollbackConfig : spec.UpdateConfig) ?? {};
  return {
    Parallelism: c.Parallelism ?? 1, Delay: c.Delay ?? 0, FailureAction: c.FailureAction ?? 'pause',
    Monitor: c.Monitor || 5e9, MaxFailureRatio: c.MaxFailureRatio ?? 0, Order: c.Order ?? 'stop-first',
  };
}

export type UpdateState = 'updating' | 'paused' | 'completed' | 'rollback_started' | 'rollback_paused' | 'rollback_completed';
export interface UpdateStatus { State: UpdateState; StartedAt?: string; CompletedAt?: string; Message: string }

export interface ServiceRecord {
  ID: string;
  Version: { Index: number };
  CreatedAt: string;
  UpdatedAt: string;
  Spec: ServiceSpec;
  PreviousSpec?: ServiceSpec;
  /** Ports: the published ports as assigned (a port the spec left out has its number from 30000-32767 here). */
  Endpoint: { Spec: { Mode: 'vip' | 'dnsrr'; Ports?: PortConfig[] }; Ports?: PortConfig[]; VirtualIPs?: VirtualIp[] };
  /** The rolling replacement of tasks of an older spec, as the orchestrator last wrote it. */
  UpdateStatus?: UpdateStatus;
}

export type TaskState = 'new' | 'pending' | 'assigned' | 'accepted' | 'preparing' | 'starting' | 'running' | 'complete' | 'shutdown' | 'failed' | 'rejected' | 'orphaned';

export interface TaskRecord {
  ID: string;
  Version: { Index: number };
  CreatedAt: string;
  UpdatedAt: string;
  Labels: Record<string, string>;
  Spec: ServiceSpec['TaskTemplate'];
  ServiceID: string;
  /** Replicated services only; a global service's task is known by its node. */
  Slot?: number;
  NodeID?: string;
  /** PortStatus: the host-mode ports the task's container published on its node, as bound (a port its spec left out has its number here). */
  Status: { Timestamp: string; State: TaskState; Message: string; Err?: string; ContainerStatus?: { ContainerID: string; PID: number; ExitCode: number }; PortStatus?: { Ports?: PortConfig[] } };
  DesiredState: 'running' | 'shutdown';
  NetworksAttachments?: Array<{ Network: { ID: string }; Addresses: string[] }>;
  /** The service's name and its spec version this task was made from. */
  ServiceAnnotations: { Name: string; Labels?: Record<string, string> };
  /**
   * The service's endpoint when the task was made (swarmkit's Task.Endpoint): its mode (how the task
   * is named in DNS) and its host-mode ports, which the task's container publishes on its node (a
   * PublishedPort of 0: any free port there). Tasks of an older berth have no Ports.
   */
  Endpoint?: { Spec: { Mode: 'vip' | 'dnsrr' }; Ports?: PortConfig[] };
  SpecVersion: number;
  /** Orders the tasks of one slot (or node): the highest is the slot's current task. */
  Attempt: number;
  /** Restarts by policy before this task, for --restart-max-attempts. */
  Restarts?: number;
  /** Set when the restart policy ends the slot with this task. */
  NoRestart?: boolean;
  /** When this finished task's slot is started again (ms), per the restart delay. */
  RestartAt?: number;
  /** Made by a rolling update, to replace a task of an older spec. */
  Update?: boolean;
  /** Stopped by a stop-first update: its replacement is made once it has stopped. */
  UpdateStop?: boolean;
}

/**
 * Whether a task runs the service's current template and publishes its current host-mode ports
 * (swarmkit's IsTaskDirty, negated): `_up-to-date`. A container's published ports are fixed when
 * it is made, so a host-mode port added or removed replaces the tasks, as Docker's update does;
 * ingress ports are the mesh's, and change under running tasks. The template's form is made once,
 * for all the tasks the predicate is asked of.
 */
export function upToDateWith(svc: ServiceRecord): (t: TaskRecord) => boolean {
  let want: string | undefined;
  let ports: string | undefined;
  return (t) => canonicalOf(t.Spec) === (want ??= canonicalOf(svc.Spec.TaskTemplate))
    // A task of an older berth has no ports of its own and published none itself: it is replaced
    // where its service has host-mode ports, so that its new container publishes them.
    && canonicalOf(t.Endpoint?.Ports ?? NO_PORTS) === (ports ??= canonical(hostModePorts(svc)));
}

const NO_PORTS: PortConfig[] = [];

/** A service's host-mode ports as its new tasks take them (a task's `Endpoint.Ports`). */
export function hostModePorts(svc: ServiceRecord | undefined): PortConfig[] {
  return (svc?.Endpoint.Ports ?? []).filter((p) => p.PublishMode === 'host');
}

/**
 * A record's spec keeps its canonical form while the object lives: the orchestrator's view hands
 * every pass the same objects until the store changes them, and 10,000 services' templates made
 * canonical at every pass were most of a pass.
 */
const canonicalForms = new WeakMap<object, string>();
function canonicalOf(spec: object): string {
  let c = canonicalForms.get(spec);
  if (c === undefined) canonicalForms.set(spec, (c = canonical(spec)));
  return c;
}

/**
 * A spec as Go compares it after decoding: keys in order, and a zero value (0, '', false, null,
 * an empty list or object) the same as no value, since clients send back what they read with
 * their own zero fields filled in (`service scale` must not look like a change of the template).
 */
function canonical(v: unknown): string {
  return JSON.stringify(pruned(v) ?? null);
}

function pruned(v: unknown): unknown {
  if (Array.isArray(v)) return v.length ? v.map((x) => pruned(x) ?? null) : undefined;
  if (v && typeof v === 'object') {
    const kept = Object.entries(v).map(([k, x]) => [k, pruned(x)] as const).filter(([, x]) => x !== undefined).sort(([a], [b]) => a.localeCompare(b));
    return kept.length ? Object.fromEntries(kept) : undefined;
  }
  return v === 0 || v === '' || v === false || v === null ? undefined : v;
}

const TERMINAL: TaskState[] = ['complete', 'shutdown', 'failed', 'rejected', 'orphaned'];
export const isTerminal = (s: TaskState): boolean => TERMINAL.includes(s);

/**
 * Docker's name check for services (swarmkit's validateAnnotations): letters and digits, with
 * runs of '-' and '_' between them (`docker stack deploy` names services STACK_SERVICE), and a
 * DNS label's 63 characters at most.
 */
const NAME = /^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$/;

const invalidArg = (desc: string) => rpcError('InvalidArgument', desc);

/** Checks a ServiceSpec from the API and fills Docker's defaults; throws Docker's words. */
/** A service's VIP on one network (its address with the subnet's prefix). */
export interface VirtualIp { NetworkID: string; Addr: string }

export function normaliseSpec(raw: unknown): ServiceSpec {
  if (!raw || typeof raw !== 'object') throw new BadRequestError('invalid JSON body');
  const s = structuredClone(raw) as ServiceSpec;
  if (!s.Name) s.Name = '';
  if (s.Name && !NAME.test(s.Name)) throw invalidArg(`name must be valid as a DNS name component`);
  if (s.Name.length > 63) throw invalidArg('name must be 63 characters or fewer');
  const tt = s.TaskTemplate as ServiceSpec['TaskTemplate'] | undefined;
  const cs = tt?.ContainerSpec;
  if (!tt || !cs) throw invalidArg('ContainerSpec: missing in service spec');
  if (!cs.Image) throw invalidArg('ContainerSpec: image reference must be provided');
  // The legacy top-level Networks go where newer clients put them.
  const legacy = (s as { Networks?: Array<{ Target: string; Aliases?: string[] }> }).Networks;
  if (legacy?.length && !tt.Networks?.length) tt.Networks = legacy;
  delete (s as { Networks?: unknown }).Networks;
  if (!s.Mode || (!s.Mode.Replicated && !s.Mode.Global)) s.Mode = { Replicated: { Replicas: 1 } };
  if (s.Mode.Replicated && s.Mode.Global) throw invalidArg('only one of replicated and global mode may be given');
  if (s.Mode.Replicated) {
    const r = s.Mode.Replicated.Replicas ?? 1;
    // The Go client's field is a uint64: a negative or fractional count never decodes.
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 0) {
      throw new BadRequestError(`json: cannot unmarshal number ${String(r)} into Go struct field ReplicatedService.Mode.Replicated.Replicas of type uint64`);
    }
    s.Mode.Replicated.Replicas = r;
  }
  const mode = s.EndpointSpec?.Mode ?? 'vip';
  if (mode !== 'vip' && mode !== 'dnsrr') throw invalidArg(`EndpointSpec: invalid endpoint mode ${String(mode)}`);
  const ports = normalisePorts(s.EndpointSpec?.Ports, mode);
  // As Docker keeps it: a published port left out stays out of the spec (Endpoint.Ports has the assigned one).
  s.EndpointSpec = { ...(s.EndpointSpec ?? {}), Mode: mode, ...(ports.length ? { Ports: ports.map(withoutZeroPort) } : {}) };
  if (!ports.length) delete s.EndpointSpec.Ports;
  const rp = tt.RestartPolicy ?? {};
  if (rp.Condition && !['none', 'on-failure', 'any'].includes(rp.Condition)) throw invalidArg(`invalid RestartCondition ${rp.Condition}`);
  if ((rp.Delay ?? 0) < 0) throw invalidArg('TaskSpec: restart-delay cannot be negative');
  tt.RestartPolicy = { Condition: rp.Condition ?? 'any', Delay: rp.Delay ?? 5e9, MaxAttempts: rp.MaxAttempts ?? 0, ...(rp.Window !== undefined ? { Window: rp.Window } : {}) };
  for (const c of tt.Placement?.Constraints ?? []) parseConstraint(c);
  for (const [field, c] of [['UpdateConfig', s.UpdateConfig], ['RollbackConfig', s.RollbackConfig]] as const) {
    if (!c) continue;
    if ((c.Parallelism ?? 0) < 0) throw invalidArg(`${field}: parallelism cannot be negative`);
    if ((c.Delay ?? 0) < 0) throw invalidArg(`${field}: delay cannot be negative`);
    if ((c.Monitor ?? 0) < 0) throw invalidArg(`${field}: monitor cannot be negative`);
    if (c.MaxFailureRatio !== undefined && (c.MaxFailureRatio < 0 || c.MaxFailureRatio > 1)) throw invalidArg(`${field}: max failure ratio must be between 0 and 1`);
    if (c.FailureAction && !['pause', 'continue', 'rollback'].includes(c.FailureAction)) throw invalidArg(`${field}: unrecognized failure action ${String(c.FailureAction)}`);
    if (c.Order && !['stop-first', 'start-first'].includes(c.Order)) throw invalidArg(`${field}: unrecognized order ${String(c.Order)}`);
  }
  return s;
}

// ---------------------------------------------------------------- placement constraints

export interface Constraint { key: string; op: '==' | '!='; value: string }

/** swarmkit's constraint grammar: `node.KEY==VALUE` or `!=`, keys node.id/hostname/role/labels.*, engine.labels.*. */
export function parseConstraint(text: string): Constraint {
  const m = /^\s*([\w.-]+)\s*(==|!=)\s*(.*?)\s*$/.exec(text);
  if (!m || !m[3]) throw invalidArg(`constraint expected one operator from ==, !=`);
  const key = m[1]!.toLowerCase();
  if (!['node.id', 'node.hostname', 'node.role', 'node.platform.os', 'node.platform.arch'].includes(key) && !key.startsWith('node.labels.') && !key.startsWith('engine.labels.')) {
    throw invalidArg(`constraint key ${m[1]} is not supported`);
  }
  return { key: key.startsWith('node.labels.') ? `node.labels.${m[1]!.slice('node.labels.'.length)}` : key, op: m[2] as '==' | '!=', value: m[3]! };
}

/** What placement needs to know of a node. */
export interface NodeView {
  id: string;
  hostname: string;
  role: 'manager' | 'worker';
  labels: Record<string, string>;
  availability: 'active' | 'pause' | 'drain';
  /** Its presence lease is held: the node is up. */
  ready: boolean;
}

export function matches(n: NodeView, constraints: string[]): boolean {
  return constraints.map(parseConstraint).every((c) => {
    let have: string | undefined;
    if (c.key === 'node.id') have = n.id;
    else if (c.key === 'node.hostname') have = n.hostname;
    else if (c.key === 'node.role') have = n.role;
    else if (c.key === 'node.platform.os') have = 'linux';
    else if (c.key.startsWith('node.labels.')) have = n.labels[c.key.slice('node.labels.'.length)];
    // Values compare case-insensitively as swarmkit's, except labels' (exact).
    const eq = have !== undefined && (c.key.startsWith('node.labels.') ? have === c.value : have.toLowerCase() === c.value.toLowerCase());
    return c.op === '==' ? eq : !eq;
  });
}

export const desiredReplicas = (s: ServiceSpec): number => s.Mode.Replicated?.Replicas ?? 0;

/** Whether a task counts in its node's load: desired running, on a node. */
export const loadsNode = (t: TaskRecord): t is TaskRecord & { NodeID: string } => t.DesiredState === 'running' && !!t.NodeID;
