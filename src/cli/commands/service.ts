/** `berth service …`: the docker CLI's service commands, with its words, over /services and /tasks. */
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Command } from 'commander';
import { CliExit, command, filtersJson, type CliContext } from '../context.js';
import { formatList } from '../format/formatter.js';
import { ellipsis, humanDuration, truncateId } from '../format/human.js';
import { Struct } from '../gotemplate.js';
import { collect } from '../runflags.js';
import { inspectMany, logQuery, logsCommand, type LogFlags } from './containers.js';
import { durationNs, title } from './swarm.js';
import { pipeOutput } from '../streams.js';

interface PortJson { Protocol: string; TargetPort: number; PublishedPort?: number; PublishMode?: string }
interface ServiceJson {
  ID: string; Version: { Index: number };
  Spec: { Name: string; Mode: { Replicated?: { Replicas?: number }; Global?: object }; TaskTemplate: { ContainerSpec: { Image: string; Env?: string[]; Args?: string[] }; ForceUpdate?: number } & Record<string, unknown> } & Record<string, unknown>;
  Endpoint?: { Ports?: PortJson[] };
  UpdateStatus?: { State: string; Message: string };
}
interface TaskJson {
  ID: string; Slot?: number; NodeID?: string; ServiceID: string; DesiredState: string; Spec: { ContainerSpec: { Image: string } };
  Status: { State: string; Err?: string; Timestamp: string; PortStatus?: { Ports?: PortJson[] } };
}

/** `-p 8080:80[/udp]` or `published=8080,target=80,protocol=udp,mode=host`, as the docker CLI parses them. */
function parsePublish(v: string): PortJson {
  if (v.includes('=')) {
    const kv = Object.fromEntries(v.split(',').map((p) => p.split('=') as [string, string]));
    return { Protocol: kv.protocol ?? 'tcp', TargetPort: Number(kv.target), ...(kv.published ? { PublishedPort: Number(kv.published) } : {}), PublishMode: kv.mode ?? 'ingress' };
  }
  const [ports, proto = 'tcp'] = v.split('/');
  const [a, b] = ports!.split(':');
  return b === undefined ? { Protocol: proto, TargetPort: Number(a), PublishMode: 'ingress' } : { Protocol: proto, TargetPort: Number(b), PublishedPort: Number(a), PublishMode: 'ingress' };
}

interface UpdateFlags { updateParallelism?: number; updateDelay?: number; updateOrder?: string; updateFailureAction?: string; updateMonitor?: number }
const updateConfig = (o: UpdateFlags, base: Record<string, unknown> = {}) => ({
  ...base,
  ...(o.updateParallelism !== undefined ? { Parallelism: o.updateParallelism } : {}),
  ...(o.updateDelay !== undefined ? { Delay: o.updateDelay } : {}),
  ...(o.updateOrder ? { Order: o.updateOrder } : {}),
  ...(o.updateFailureAction ? { FailureAction: o.updateFailureAction } : {}),
  ...(o.updateMonitor !== undefined ? { Monitor: o.updateMonitor } : {}),
});

function withUpdateFlags(c: Command): Command {
  return c.option('--update-parallelism <n>', 'Maximum number of tasks updated simultaneously (0 to update all at once)', (v: string) => Number(v))
    .option('--update-delay <duration>', 'Delay between updates (ns|us|ms|s|m|h)', durationNs('update-delay'))
    .option('--update-order <string>', 'Update order ("start-first"|"stop-first")')
    .option('--update-failure-action <string>', 'Action on update failure ("pause"|"continue"|"rollback")')
    .option('--update-monitor <duration>', 'Duration after each task update to monitor for failure (ns|us|ms|s|m|h)', durationNs('update-monitor'));
}

const SERVICE_FORMAT = {
  table: 'table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}',
  headers: { ID: 'ID', Name: 'NAME', Mode: 'MODE', Replicas: 'REPLICAS', Image: 'IMAGE', Ports: 'PORTS' },
  quiet: '{{.ID}}',
};
const TASK_FORMAT = {
  table: 'table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}',
  headers: { ID: 'ID', Name: 'NAME', Image: 'IMAGE', Node: 'NODE', DesiredState: 'DESIRED STATE', CurrentState: 'CURRENT STATE', Error: 'ERROR', Ports: 'PORTS' },
  quiet: '{{.ID}}',
};
/** The docker CLI's cut of a task's error in a table. */
const MAX_ERR_LENGTH = 30;

/**
 * A service's ingress ports as `docker service ls` shows them (the docker CLI's formatter, to the
 * letter): host-mode ones are each task's (`service ps`); a port that follows the last one of its
 * protocol by at most one, published and target (unsigned, as Go subtracts), extends its range
 * unless that range's targets already cover it.
 */
export function servicePortsText(ports: PortJson[]): string {
  const ingress = ports.filter((p) => (p.PublishMode ?? 'ingress') === 'ingress')
    .sort((a, b) => (a.Protocol === b.Protocol ? (a.PublishedPort ?? 0) - (b.PublishedPort ?? 0) : a.Protocol < b.Protocol ? -1 : 1));
  const out: string[] = [];
  const gap = (a: number, b: number) => ((a - b) >>> 0) > 1;
  let r = { proto: '', p0: 0, p1: 0, t0: 0, t1: 0 };
  const text = (x: typeof r) => `*:${x.p1 > x.p0 ? `${x.p0}-${x.p1}` : x.p0}->${x.t1 > x.t0 ? `${x.t0}-${x.t1}` : x.t0}/${x.proto}`;
  for (const p of ingress) {
    const pub = p.PublishedPort ?? 0;
    if (p.Protocol !== r.proto || gap(pub, r.p1) || gap(p.TargetPort, r.t1) || (r.t1 !== r.t0 && p.TargetPort <= r.t1)) {
      if (r.p0 > 0) out.push(text(r));
      r = { proto: p.Protocol, p0: pub, p1: pub, t0: p.TargetPort, t1: p.TargetPort };
      continue;
    }
    r.p1 = pub;
    r.t1 = p.TargetPort;
  }
  if (r.p0 > 0) out.push(text(r));
  return out.join(', ');
}
const live = (t: TaskJson) => t.DesiredState === 'running' && t.Status.State === 'running';

export function serviceCommands(program: Command, ctx: CliContext): void {
  const c = () => ctx.client();
  const get = (ref: string) => c().json<ServiceJson>('GET', `/services/${encodeURIComponent(ref)}`);
  const tasksOf = (id: string) => c().json<TaskJson[]>('GET', '/tasks', { query: { filters: JSON.stringify({ service: { [id]: true } }) } });

  /** Until every task of the current spec runs and no update is under way; what `docker service create/update` shows, in short. */
  const converge = async (id: string): Promise<void> => {
    let last = '';
    for (;;) {
      const s = await get(id);
      const up = await c().json<TaskJson[]>('GET', '/tasks', { query: { filters: JSON.stringify({ service: { [id]: true }, '_up-to-date': { true: true } }) } });
      const want = s.Spec.Mode.Replicated ? s.Spec.Mode.Replicated.Replicas ?? 1 : new Set(up.map((t) => t.NodeID)).size;
      const running = up.filter(live).length;
      const line = `overall progress: ${running} out of ${want} tasks`;
      if (line !== last) process.stdout.write(`${line}\n`);
      last = line;
      const state = s.UpdateStatus?.State;
      if (state === 'paused' || state === 'rollback_paused') throw new CliExit(`service ${state === 'paused' ? 'update' : 'rollback'} paused: ${s.UpdateStatus!.Message}`, 1);
      if (running === want && state !== 'updating' && state !== 'rollback_started') return void process.stdout.write(`verify: Service converged\n`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  const service = command('service', 'Manage services');
  service.addCommand(withUpdateFlags(command('create', 'Create a new service')
    .requiredOption('--name <string>', 'Service name')
    .option('--replicas <n>', 'Number of tasks', (v: string) => Number(v))
    .option('--mode <string>', 'Service mode (replicated or global)', 'replicated')
    .option('--network <string>', 'Network attachments (repeat for several)', collect, [])
    .option('-p, --publish <port>', 'Publish a port as a node port', collect, [])
    .option('-e, --env <list>', 'Set environment variables', collect, [])
    .option('-l, --label <list>', 'Service labels', collect, [])
    .option('--constraint <list>', 'Placement constraints', collect, [])
    .option('--endpoint-mode <mode>', 'Endpoint mode (vip or dnsrr)', 'vip')
    .option('--restart-condition <string>', 'Restart when condition is met ("none"|"on-failure"|"any")')
    .option('-d, --detach', 'Exit immediately instead of waiting for the service to converge'))
    .argument('<image>').argument('[command...]').passThroughOptions()
    .action(async (image: string, cmd: string[], o: UpdateFlags & { name: string; replicas?: number; mode: string; network: string[]; publish: string[]; env: string[]; label: string[]; constraint: string[]; endpointMode: string; restartCondition?: string; detach?: boolean }) => {
      if (o.mode !== 'replicated' && o.mode !== 'global') throw new CliExit(`invalid argument "${o.mode}" for "--mode" flag: invalid replicated mode`, 125);
      const body = {
        Name: o.name,
        Labels: Object.fromEntries(o.label.map((l) => [l.split('=')[0], l.split('=').slice(1).join('=')])),
        TaskTemplate: {
          ContainerSpec: { Image: image, ...(cmd.length ? { Args: cmd } : {}), ...(o.env.length ? { Env: o.env } : {}) },
          ...(o.restartCondition ? { RestartPolicy: { Condition: o.restartCondition } } : {}),
          ...(o.constraint.length ? { Placement: { Constraints: o.constraint } } : {}),
          ...(o.network.length ? { Networks: o.network.map((n) => ({ Target: n })) } : {}),
        },
        Mode: o.mode === 'global' ? { Global: {} } : { Replicated: { Replicas: o.replicas ?? 1 } },
        UpdateConfig: updateConfig(o),
        EndpointSpec: { Mode: o.endpointMode, ...(o.publish.length ? { Ports: o.publish.map(parsePublish) } : {}) },
      };
      const made = await c().json<{ ID: string }>('POST', '/services/create', { body });
      process.stdout.write(`${made.ID}\n`);
      if (!o.detach) await converge(made.ID);
    }));
  service.addCommand(command('ls', 'List services').aliases(['list'])
    .option('-f, --filter <filter>', 'Filter output based on conditions provided', collect, [])
    .option('--format <string>', 'Pretty-print services using a Go template')
    .option('-q, --quiet', 'Only display IDs')
    .action(async (o: { filter: string[]; format?: string; quiet?: boolean }) => {
      const list = await c().json<ServiceJson[]>('GET', '/services', { query: { filters: filtersJson(o.filter) } });
      const tasks = await c().json<TaskJson[]>('GET', '/tasks');
      list.sort((a, b) => a.Spec.Name.localeCompare(b.Spec.Name));
      process.stdout.write(formatList(o.format, list.map((s) => {
        const running = tasks.filter((t) => t.ServiceID === s.ID && live(t)).length;
        const want = s.Spec.Mode.Replicated ? String(s.Spec.Mode.Replicated.Replicas ?? 1) : String(new Set(tasks.filter((t) => t.ServiceID === s.ID && t.DesiredState === 'running').map((t) => t.NodeID)).size);
        return new Struct('*formatter.serviceContext', {
          ID: () => s.ID.slice(0, 12), Name: () => s.Spec.Name, Mode: () => (s.Spec.Mode.Global ? 'global' : 'replicated'),
          Replicas: () => `${running}/${want}`, Image: () => s.Spec.TaskTemplate.ContainerSpec.Image.split('@')[0]!,
          Ports: () => servicePortsText(s.Endpoint?.Ports ?? []),
        });
      }), SERVICE_FORMAT, Boolean(o.quiet)));
    }));
  service.addCommand(command('ps', 'List the tasks of one or more services')
    .option('--format <string>', 'Pretty-print tasks using a Go template')
    .option('-q, --quiet', 'Only display task IDs')
    .option('--no-trunc', 'Do not truncate output')
    .argument('<service...>')
    .action(async (refs: string[], o: { format?: string; quiet?: boolean; trunc: boolean }) => {
      const nodes = new Map((await c().json<Array<{ ID: string; Description: { Hostname: string } }>>('GET', '/nodes')).map((n) => [n.ID, n.Description.Hostname]));
      const rows: Struct[] = [];
      for (const ref of refs) {
        const s = await get(ref);
        const ts = (await tasksOf(s.ID)).sort((a, b) => (a.Slot ?? 0) - (b.Slot ?? 0) || Date.parse(b.Status.Timestamp) - Date.parse(a.Status.Timestamp));
        // As the docker CLI: in a table, a slot's older tasks are indented under its latest.
        const table = !o.format || o.format.startsWith('table');
        let prev = '';
        for (const t of ts) {
          const name = `${s.Spec.Name}.${t.Slot ?? t.NodeID}`;
          const shown = table && name === prev ? ` \\_ ${name}` : name;
          prev = name;
          const err = o.trunc ? ellipsis(t.Status.Err ?? '', MAX_ERR_LENGTH) : t.Status.Err ?? '';
          rows.push(new Struct('*formatter.taskContext', {
            ID: () => (o.trunc ? truncateId(t.ID) : t.ID), Name: () => shown, Image: () => t.Spec.ContainerSpec.Image.split('@')[0]!,
            Node: () => nodes.get(t.NodeID ?? '') ?? '', DesiredState: () => title(t.DesiredState), CurrentState: () => `${title(t.Status.State)} ${humanDuration(Date.now() - Date.parse(t.Status.Timestamp)).toLowerCase()} ago`,
            Error: () => (err ? `"${err}"` : ''),
            Ports: () => (t.Status.PortStatus?.Ports ?? []).map((p) => `*:${p.PublishedPort}->${p.TargetPort}/${p.Protocol}`).join(','),
          }));
        }
      }
      process.stdout.write(formatList(o.format, rows, TASK_FORMAT, Boolean(o.quiet)));
    }));
  service.addCommand(command('inspect', 'Display detailed information on one or more services')
    .option('-f, --format <string>', 'Format output using a Go template')
    .argument('<service...>')
    .action(async (refs: string[], o: { format?: string }) => inspectMany(refs, o.format, (r) => get(r), 'service')));
  service.addCommand(command('scale', 'Scale one or multiple replicated services')
    .option('-d, --detach', 'Exit immediately instead of waiting for the service to converge')
    .argument('<service=replicas...>')
    .action(async (pairs: string[], o: { detach?: boolean }) => {
      for (const p of pairs) {
        const [ref, n] = p.split('=');
        if (!ref || n === undefined || !/^\d+$/.test(n)) throw new CliExit(`invalid scale specifier '${p}'.\nSee 'berth service scale --help'.`, 1);
        const s = await get(ref);
        if (!s.Spec.Mode.Replicated) throw new CliExit(`scale can only be used with replicated mode`, 1);
        await c().raw('POST', `/services/${s.ID}/update`, { query: { version: s.Version.Index }, body: { ...s.Spec, Mode: { Replicated: { Replicas: Number(n) } } } });
        process.stdout.write(`${ref} scaled to ${n}\n`);
        if (!o.detach) await converge(s.ID);
      }
    }));
  service.addCommand(withUpdateFlags(command('update', 'Update a service')
    .option('--image <string>', 'Service image tag')
    .option('--replicas <n>', 'Number of tasks', (v: string) => Number(v))
    .option('--env-add <list>', 'Add or update an environment variable', collect, [])
    .option('--env-rm <list>', 'Remove an environment variable', collect, [])
    .option('--force', 'Force update even if no changes require it')
    .option('--rollback', 'Rollback to previous specification')
    .option('-d, --detach', 'Exit immediately instead of waiting for the service to converge'))
    .argument('<service>')
    .action(async (ref: string, o: UpdateFlags & { image?: string; replicas?: number; envAdd: string[]; envRm: string[]; force?: boolean; rollback?: boolean; detach?: boolean }) => {
      const s = await get(ref);
      const spec = structuredClone(s.Spec);
      const cs = spec.TaskTemplate.ContainerSpec;
      if (o.image) cs.Image = o.image;
      if (o.envAdd.length || o.envRm.length) {
        const key = (e: string) => e.split('=')[0]!;
        const drop = new Set([...o.envRm, ...o.envAdd].map(key));
        cs.Env = [...(cs.Env ?? []).filter((e) => !drop.has(key(e))), ...o.envAdd];
      }
      if (o.replicas !== undefined) spec.Mode = { Replicated: { Replicas: o.replicas } };
      if (o.force) spec.TaskTemplate.ForceUpdate = (spec.TaskTemplate.ForceUpdate ?? 0) + 1;
      spec.UpdateConfig = updateConfig(o, (spec.UpdateConfig as Record<string, unknown> | undefined) ?? {});
      await c().raw('POST', `/services/${s.ID}/update`, { query: { version: s.Version.Index, ...(o.rollback ? { rollback: 'previous' } : {}) }, body: spec });
      process.stdout.write(`${ref}\n`);
      if (!o.detach) await converge(s.ID);
    }));
  service.addCommand(command('rollback', 'Revert changes to a service\'s configuration')
    .option('-d, --detach', 'Exit immediately instead of waiting for the service to converge')
    .argument('<service>')
    .action(async (ref: string, o: { detach?: boolean }) => {
      const s = await get(ref);
      await c().raw('POST', `/services/${s.ID}/update`, { query: { version: s.Version.Index, rollback: 'previous' }, body: s.Spec });
      process.stdout.write(`${ref}\n`);
      if (!o.detach) await converge(s.ID);
    }));
  service.addCommand(command('rm', 'Remove one or more services').aliases(['remove'])
    .argument('<service...>')
    .action(async (refs: string[]) => {
      const errors: string[] = [];
      for (const ref of refs) {
        try {
          await c().raw('DELETE', `/services/${encodeURIComponent(ref)}`);
          process.stdout.write(`${ref}\n`);
        } catch (e) { errors.push((e as Error).message); }
      }
      if (errors.length) throw new CliExit(errors.join('\n'), 1);
    }));
  service.addCommand(logsCommand('Fetch the logs of a service or task')
    .option('--no-trunc', 'Do not truncate output')
    .option('--raw', 'Do not neatly format logs')
    .argument('<service|task>')
    .action(async (ref: string, o: LogFlags & { trunc: boolean; raw?: boolean }) => {
      // A service of that name or id, else a task, as the docker CLI asks.
      const svc = await get(ref).catch(() => undefined);
      const path = svc ? `/services/${svc.ID}/logs` : `/tasks/${encodeURIComponent(ref)}/logs`;
      const res = await c().stream('GET', path, { query: { ...logQuery(o), details: 1 } });
      const contexts = new Map<string, Promise<string>>();
      /** `NAME.SLOT.TASK@NODE` as the docker CLI prints it, asked once per task. */
      const contextOf = (attrs: Map<string, string>) => {
        const taskId = attrs.get('com.docker.swarm.task.id') ?? '';
        let ctx = contexts.get(taskId);
        if (!ctx) {
          ctx = (async () => {
            const t = await c().json<TaskJson & { ServiceAnnotations?: { Name?: string } }>('GET', `/tasks/${taskId}`).catch(() => undefined);
            const node = await c().json<{ Description?: { Hostname?: string } }>('GET', `/nodes/${attrs.get('com.docker.swarm.node.id') ?? ''}`).catch(() => undefined);
            const name = t?.ServiceAnnotations?.Name ?? svc?.Spec.Name ?? '';
            return `${name}.${t?.Slot ?? t?.NodeID ?? ''}.${o.trunc ? taskId.slice(0, 12) : taskId}@${node?.Description?.Hostname ?? attrs.get('com.docker.swarm.node.id') ?? ''}`;
          })();
          contexts.set(taskId, ctx);
        }
        return ctx;
      };
      /** One frame is one line: [timestamp] details line, as the API sends them. */
      const format = async (frame: Buffer): Promise<string> => {
        let text = frame.toString('utf8');
        let stamp = '';
        if (o.timestamps) { const sp = text.indexOf(' '); stamp = text.slice(0, sp + 1); text = text.slice(sp + 1); }
        const sp = text.indexOf(' ');
        const attrs = new Map(text.slice(0, sp).split(',').map((kv) => kv.split('=').map(decodeURIComponent) as [string, string]));
        const line = text.slice(sp + 1);
        return o.raw ? `${stamp}${line}` : `${stamp}${await contextOf(attrs)}    | ${line}`;
      };
      const sink = (out: NodeJS.WriteStream) => new Writable({ write: (chunk: Buffer, _e, done) => { format(chunk).then((l) => { out.write(l); done(); }, done); } });
      const [out, err] = [sink(process.stdout), sink(process.stderr)];
      await pipeOutput(res, false, out, err);
      // The last lines may still wait for their task's name.
      await Promise.all([finished(out.end()), finished(err.end())]);
    }));
  program.addCommand(service);
}
