import type { Cluster } from '../cluster/cluster.js';
import type { Engine } from '../engine/engine.js';
import type { ExecManager } from '../engine/exec.js';
import type { RegistryService } from '../images/registry/service.js';
import type { NetworkController } from '../network/controller.js';
import type { ContainerRuntime } from '../runtime/runtime.js';
import type { Tracer } from '../trace/tracer.js';

export interface DaemonInfo {
  id: string;
  root: string;
  socket: string;
  version: string;
  startedAt: Date;
  /** The name this host goes by: /info's Name and its swarm node's hostname, one value as in Docker (`--node-hostname`, else the system's). */
  hostname: string;
}

/** Everything a route handler may reach: the engine and its managers, never a driver directly. */
export interface ApiContext {
  engine: Engine;
  /** Networks: their records, create and remove; a container's endpoints go through the engine. */
  network: NetworkController;
  execs: ExecManager;
  runtime: ContainerRuntime;
  info: DaemonInfo;
  /** Pull, push and login against registries (absent in tools that serve no registry). */
  registry?: RegistryService;
  /** This node's swarm membership (absent in tools that serve no cluster). */
  cluster?: Cluster;
  /** The Prometheus exposition of /metrics (absent in tools that keep none). */
  metrics?: () => Promise<string>;
  /** `network trace` (absent in tools that trace nothing). */
  tracer?: Tracer;
}
