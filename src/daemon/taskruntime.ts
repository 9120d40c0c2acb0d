import type { TaskContainer, TaskRuntime } from '../cluster/agent.js';
import type { PortConfig } from '../cluster/publish.js';
import type { TaskRecord } from '../cluster/servicemodel.js';
import type { Engine } from '../engine/engine.js';
import type { ContainerRecord } from '../engine/types.js';
import { errorMessage } from '../util/errors.js';
import { listeningPorts } from './listeners.js';

/** Docker's labels on a task's container (daemon/cluster/executor/container). */
export const TASK_ID_LABEL = 'com.docker.swarm.task.id';

function taskOf(c: ContainerRecord): string | undefined {
  return c.Config.Labels?.[TASK_ID_LABEL];
}

function view(c: ContainerRecord): TaskContainer {
  const health = c.State.Health?.Status;
  return {
    id: c.Id, running: c.State.Running, exitCode: c.State.ExitCode, pid: c.State.Pid, error: c.State.Error,
    ...(health === 'starting' || health === 'healthy' || health === 'unhealthy' ? { health } : {}),
    ...(c.State.Running ? { ports: boundPorts(c), startedAt: Date.parse(c.State.StartedAt) } : {}),
  };
}

/** What a task's container needs of its service: the ingress network to join, and the ports it publishes (`80/tcp`). */
export interface TaskService { ingress?: string; targetPorts: string[] }

/**
 * A task's host-mode ports as its container bound them (swarmkit's PortStatus, from the
 * container's published ports: a task container publishes nothing else). IPv4's alone: the same
 * port bound for IPv6 is not another port.
 */
function boundPorts(c: ContainerRecord): PortConfig[] {
  return (c.Published ?? []).filter((b) => b.family !== 6 && b.proto !== 'sctp')
    .map((b) => ({ Protocol: b.proto as PortConfig['Protocol'], TargetPort: b.containerPort, PublishedPort: b.hostPort, PublishMode: 'host' as const }));
}

/**
 * Docker's executor: a task's host-mode ports are its container's own published ports, on every
 * address of the node; one with no number takes any free port there, as `-p 80` does.
 */
function portBindings(ports: PortConfig[]): { ExposedPorts: Record<string, object>; PortBindings: Record<string, Array<{ HostIp: string; HostPort: string }>> } {
  const out = { ExposedPorts: {} as Record<string, object>, PortBindings: {} as Record<string, Array<{ HostIp: string; HostPort: string }>> };
  for (const p of ports) {
    const key = `${p.TargetPort}/${p.Protocol}`;
    out.ExposedPorts[key] = {};
    (out.PortBindings[key] ??= []).push({ HostIp: '', HostPort: p.PublishedPort ? String(p.PublishedPort) : '' });
  }
  return out;
}

/**
 * The engine as the swarm agent sees it: a task becomes a container named SERVICE.SLOT.TASKID with
 * Docker's swarm labels, on the service's network with the names the service's DNS needs
 * (`tasks.SERVICE`, and `SERVICE` itself for dnsrr), created and started as `docker run` would.
 */
export class EngineTaskRuntime implements TaskRuntime {
  constructor(
    private readonly engine: Engine, private readonly serviceVip: (serviceId: string) => boolean,
    /** The task's service as its container needs it: the ingress network's id when the service publishes through the routing mesh (its task then has an endpoint there, as Docker's), and its published ports. */
    private readonly serviceFor: (serviceId: string) => Promise<TaskService> = async () => ({ targetPorts: [] }),
  ) {}

  /** The ports each task container's service publishes, by container id (its image's exposed ports are in its record). */
  private readonly published = new Map<string, string[]>();

  /** This host's task containers with their task ids, those on their way out left aside. */
  private *tasked(): Iterable<[string, ContainerRecord]> {
    for (const c of this.engine.containers.values()) {
      const t = taskOf(c);
      if (t && c.State.Status !== 'removing') yield [t, c];
    }
  }

  taskContainers(): Map<string, TaskContainer> {
    return new Map([...this.tasked()].map(([t, c]) => [t, view(c)]));
  }

  taskContainer(taskId: string): TaskContainer | undefined {
    for (const [t, c] of this.tasked()) if (t === taskId) return view(c);
    return undefined;
  }

  async run(t: TaskRecord, nodeId: string): Promise<TaskContainer> {
    const cs = t.Spec.ContainerSpec;
    const svc = t.ServiceAnnotations.Name;
    const name = `${svc}.${t.Slot ?? nodeId}.${t.ID}`;
    const nets = t.Spec.Networks ?? [];
    // The task's own record says (the service's VIP may not have reached this host's view yet: a
    // task started meanwhile took the service's name as a plain alias, and `web` answered a task
    // beside the VIP); tasks of an older berth ask the view.
    const dnsrr = t.Endpoint ? t.Endpoint.Spec.Mode === 'dnsrr' : !this.serviceVip(t.ServiceID);
    // Under a VIP the service's name and its attachment's aliases answer the VIP (ServiceNet), so
    // the task answers only the `tasks.` forms of them; under dnsrr it answers them all.
    const endpoints = Object.fromEntries(nets.map((n) => {
      const names = [svc, ...(n.Aliases ?? [])];
      return [n.Target, { Aliases: [...(dnsrr ? names : []), ...names.map((a) => `tasks.${a}`)] }];
    }));
    let image = cs.Image;
    // The CLI pins a digest it could resolve; the local store knows the image by its name.
    if (image.includes('@') && !this.engine.images.list().some((i) => JSON.stringify(i).includes(image))) image = image.split('@')[0]!;
    const hostPorts = t.Endpoint?.Ports ?? [];
    const published = hostPorts.length ? portBindings(hostPorts) : undefined;
    const body = {
      Image: image,
      ...(published ? { ExposedPorts: published.ExposedPorts } : {}),
      ...(cs.Command?.length ? { Entrypoint: cs.Command } : {}),
      ...(cs.Args?.length ? { Cmd: cs.Args } : {}),
      Env: cs.Env ?? [],
      ...(cs.Healthcheck ? { Healthcheck: cs.Healthcheck } : {}),
      ...(cs.Hostname ? { Hostname: cs.Hostname } : {}),
      ...(cs.Dir ? { WorkingDir: cs.Dir } : {}),
      ...(cs.User ? { User: cs.User } : {}),
      Labels: {
        ...(cs.Labels ?? {}),
        'com.docker.swarm.node.id': nodeId,
        'com.docker.swarm.service.id': t.ServiceID,
        'com.docker.swarm.service.name': svc,
        'com.docker.swarm.task': '',
        [TASK_ID_LABEL]: t.ID,
        'com.docker.swarm.task.name': `${svc}.${t.Slot ?? nodeId}.${t.ID}`,
      },
      HostConfig: { NetworkMode: nets[0]?.Target ?? 'default', ...(published ? { PortBindings: published.PortBindings } : {}) },
      NetworkingConfig: { EndpointsConfig: nets[0] ? { [nets[0].Target]: endpoints[nets[0].Target]! } : {} },
    };
    const { ingress, targetPorts } = await this.serviceFor(t.ServiceID);
    // A service with no network of its own has its task on ingress alone (Docker's), else ingress comes second.
    if (ingress && !nets.length) body.HostConfig.NetworkMode = ingress;
    const { Id } = await this.engine.create(body, name, { swarmTask: true });
    for (const id of this.published.keys()) if (!this.engine.find(id)) this.published.delete(id);
    if (targetPorts.length) this.published.set(Id, targetPorts);
    try {
      // Its other networks, with their names, before it starts (as `docker run` then `network connect`).
      for (const n of nets.slice(1)) await this.engine.connect(Id, n.Target, endpoints[n.Target]!, { swarmTask: true });
      if (ingress && nets.length) await this.engine.connect(Id, ingress, {}, { swarmTask: true });
      await this.engine.start(Id);
    } catch (e) {
      this.published.delete(Id);
      await this.engine.remove(Id, { force: true }).catch(() => undefined);
      throw e;
    }
    return view(this.engine.get(Id));
  }

  async awaiting(containerId: string): Promise<string[]> {
    const c = this.engine.find(containerId);
    if (!c?.State.Running) return [];
    const wanted = new Set([...(this.published.get(c.Id) ?? []), ...Object.keys(c.Config.ExposedPorts ?? {}).map((p) => (p.includes('/') ? p : `${p}/tcp`))]);
    if (!wanted.size) return [];
    const bound = await listeningPorts(c.State.Pid);
    return [...wanted].filter((p) => !bound.has(p));
  }

  async remove(containerId: string, graceSec: number): Promise<void> {
    const c = this.engine.find(containerId);
    this.published.delete(containerId);
    if (!c) return;
    if (c.State.Running) await this.engine.stop(containerId, graceSec).catch((e) => { if (!/is not running|No such container/.test(errorMessage(e))) throw e; });
    await this.engine.remove(containerId, { force: true }).catch((e) => { if (!/No such container/.test(errorMessage(e))) throw e; });
  }

  onExit(cb: (taskId: string) => void): () => void {
    return this.engine.events.subscribe((e) => {
      if (e.Type !== 'container' || (e.Action !== 'die' && e.Action !== 'destroy' && !e.Action.startsWith('health_status'))) return;
      const t = e.Actor.Attributes[TASK_ID_LABEL];
      if (t) cb(t);
    });
  }
}
