/** Container commands: run, create, start, stop, kill, restart, rm, ps, logs, exec, wait, top, stats, port, rename, inspect, prune. */
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { DaemonError, readJson } from '../client.js';
import { CliExit, command, confirm, filtersJson, forEachTarget, type CliContext } from '../context.js';
import { CONTAINER_FORMAT, STATS_FORMAT, containerRow, statsEntry, statsRow, type ContainerSummary } from '../format/contexts.js';
import { formatList, renderInspect } from '../format/formatter.js';
import { humanSize } from '../format/human.js';
import { renderTable } from '../format/table.js';
import { addContainerFlags, collect, createBody, FlagError, type ContainerFlags } from '../runflags.js';
import { interactive, pipeOutput } from '../streams.js';

interface CreateResult { Id: string; Warnings?: string[] | null }

async function createContainer(ctx: CliContext, image: string, args: string[], flags: ContainerFlags): Promise<CreateResult> {
  let body: Record<string, unknown>;
  try {
    body = createBody(image, args, flags);
  } catch (e) {
    if (e instanceof FlagError) throw new CliExit(`berth: ${e.message}.\nSee 'berth run --help'.`, 125);
    throw e;
  }
  try {
    const res = await ctx.client().json<CreateResult>('POST', '/containers/create', { query: { name: flags.name }, body });
    for (const w of res.Warnings ?? []) process.stderr.write(`WARNING: ${w}\n`);
    return res;
  } catch (e) {
    if (e instanceof DaemonError && e.status === 404 && /image/i.test(e.message)) {
      process.stderr.write(`Unable to find image '${image}' locally\n`);
    }
    throw e;
  }
}

/** Attaches, starts and waits like `docker run` without -d; resolves with the exit status. */
async function runAttached(ctx: CliContext, id: string, flags: { interactive?: boolean; tty?: boolean; rm?: boolean }): Promise<number> {
  const client = ctx.client();
  const socket = await client.hijack(`/containers/${id}/attach`, { query: { stream: 1, stdin: Boolean(flags.interactive), stdout: 1, stderr: 1 } });
  // The daemon answers the wait's headers once the wait is registered; starting only after that
  // means a container that exits at once cannot slip past it.
  const waiting = await client.stream('POST', `/containers/${id}/wait`, { query: { condition: flags.rm ? 'removed' : 'next-exit' } });
  const session = interactive(socket, {
    tty: Boolean(flags.tty),
    stdin: Boolean(flags.interactive),
    resize: (h, w) => void client.raw('POST', `/containers/${id}/resize`, { query: { h, w } }).catch(() => undefined),
  });
  try {
    await client.raw('POST', `/containers/${id}/start`);
  } catch (e) {
    session.restore();
    socket.destroy();
    waiting.destroy();
    throw e;
  }
  await session.done;
  const result = await readJson<{ StatusCode: number; Error?: { Message: string } | null }>(waiting);
  if (result.Error?.Message) process.stderr.write(`${result.Error.Message}\n`);
  return result.StatusCode;
}

/** docker run/create exit with 125 when the daemon refuses, so scripts can tell it from the command's own status. */
async function as125<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof DaemonError) throw new CliExit(`berth: Error response from daemon: ${e.message.replace(/\.$/, '')}.`, 125);
    throw e;
  }
}

async function isTty(ctx: CliContext, id: string): Promise<boolean> {
  const c = await ctx.client().json<{ Config: { Tty: boolean } }>('GET', `/containers/${encodeURIComponent(id)}/json`);
  return Boolean(c.Config.Tty);
}

function intOption(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v)) throw new CliExit(`invalid argument "${v}" for "${flag}" flag: strconv.ParseInt: parsing "${v}": invalid syntax`, 125);
  return Number(v);
}

/** Formats NetworkSettings.Ports as `docker port` prints it. */
export function portLines(ports: Record<string, Array<{ HostIp: string; HostPort: string }> | null>, only?: string): string[] {
  const lines: string[] = [];
  const want = only === undefined ? undefined : only.includes('/') ? only : `${only}/tcp`;
  const keys = Object.keys(ports).sort((a, b) => Number(a.split('/')[0]) - Number(b.split('/')[0]) || a.localeCompare(b));
  for (const key of keys) {
    if (want !== undefined && key !== want) continue;
    for (const b of ports[key] ?? []) {
      const ip = b.HostIp || '0.0.0.0';
      const addr = ip.includes(':') ? `[${ip}]:${b.HostPort}` : `${ip}:${b.HostPort}`;
      lines.push(want !== undefined ? addr : `${key} -> ${addr}`);
    }
  }
  return lines;
}

/** Adds the container commands to `parent`; `grouped` is true under `berth container`. */
/** The flags `logs` takes for a container, a service or a task, as the docker CLI's. */
export interface LogFlags { follow?: boolean; tail: string; timestamps?: boolean; since?: string }

export function logsCommand(description: string): Command {
  return command('logs', description)
    .option('-f, --follow', 'Follow log output')
    .option('-n, --tail <string>', 'Number of lines to show from the end of the logs', 'all')
    .option('-t, --timestamps', 'Show timestamps')
    .option('--since <string>', 'Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)');
}

/** The logs endpoints' query for those flags. */
export const logQuery = (o: LogFlags) => ({ stdout: 1, stderr: 1, follow: Boolean(o.follow), tail: o.tail, timestamps: Boolean(o.timestamps), since: o.since });

export function containerCommands(parent: Command, ctx: CliContext, grouped: boolean): void {
  const run = addContainerFlags(command('run', 'Run a command in a new container'), true)
    .argument('<image>').argument('[command...]').passThroughOptions()
    .action(async (image: string, args: string[], flags: ContainerFlags) => {
      if (flags.detach && flags.rm === undefined) flags.rm = false;
      const { Id } = await as125(() => createContainer(ctx, image, args, flags));
      if (flags.detach) {
        await as125(() => ctx.client().raw('POST', `/containers/${Id}/start`));
        process.stdout.write(`${Id}\n`);
        return;
      }
      const status = await as125(() => runAttached(ctx, Id, flags));
      if (status !== 0) throw new CliExit('', status);
    });
  parent.addCommand(run);

  parent.addCommand(addContainerFlags(command('create', 'Create a new container'), false)
    .argument('<image>').argument('[command...]').passThroughOptions()
    .action(async (image: string, args: string[], flags: ContainerFlags) => {
      const { Id } = await as125(() => createContainer(ctx, image, args, { ...flags, detach: true }));
      process.stdout.write(`${Id}\n`);
    }));

  parent.addCommand(command('start', 'Start one or more stopped containers')
    .option('-a, --attach', "Attach STDOUT/STDERR and forward signals")
    .option('-i, --interactive', "Attach container's STDIN")
    .argument('<container...>')
    .action(async (targets: string[], opts: { attach?: boolean; interactive?: boolean }) => {
      if (opts.attach || opts.interactive) {
        if (targets.length > 1) throw new CliexitMany();
        const tty = await isTty(ctx, targets[0]!);
        const status = await runAttached(ctx, targets[0]!, { interactive: opts.interactive, tty });
        if (status !== 0) throw new CliExit('', status);
        return;
      }
      await forEachTarget(targets, async (t) => { await ctx.client().raw('POST', `/containers/${encodeURIComponent(t)}/start`); return t; });
    }));

  for (const [name, what, time] of [
    ['stop', 'Stop one or more running containers', 'Seconds to wait for stop before killing it'],
    ['restart', 'Restart one or more containers', 'Seconds to wait for stop before killing the container'],
  ] as const) {
    parent.addCommand(command(name, what)
      .option('-t, --time <int>', time, '10')
      .argument('<container...>')
      .action(async (targets: string[], opts: { time: string }) => {
        const t = intOption(opts.time, '--time');
        await forEachTarget(targets, async (c) => { await ctx.client().raw('POST', `/containers/${encodeURIComponent(c)}/${name}`, { query: { t } }); return c; });
      }));
  }

  parent.addCommand(command('kill', 'Kill one or more running containers')
    .option('-s, --signal <string>', 'Signal to send to the container', 'KILL')
    .argument('<container...>')
    .action(async (targets: string[], opts: { signal: string }) => {
      await forEachTarget(targets, async (c) => { await ctx.client().raw('POST', `/containers/${encodeURIComponent(c)}/kill`, { query: { signal: opts.signal } }); return c; });
    }));

  const rm = command('rm', 'Remove one or more containers');
  if (grouped) rm.alias('remove');
  parent.addCommand(rm
    .option('-f, --force', 'Force the removal of a running container (uses SIGKILL)')
    .option('-v, --volumes', 'Remove anonymous volumes associated with the container')
    .argument('<container...>')
    .action(async (targets: string[], opts: { force?: boolean; volumes?: boolean }) => {
      await forEachTarget(targets, async (c) => {
        await ctx.client().raw('DELETE', `/containers/${encodeURIComponent(c)}`, { query: { force: Boolean(opts.force), v: Boolean(opts.volumes) } });
        return c;
      });
    }));

  const ps = command(grouped ? 'ls' : 'ps', 'List containers')
    .option('-a, --all', 'Show all containers (default shows just running)')
    .option('-q, --quiet', 'Only display container IDs')
    .option('-f, --filter <filter>', 'Filter output based on conditions provided', collect, [])
    .option('--format <string>', 'Pretty-print containers using a Go template')
    .option('-n, --last <int>', 'Show n last created containers (includes all states)', '-1')
    .option('-l, --latest', 'Show the latest created container (includes all states)')
    .option('-s, --size', 'Display total file sizes')
    .option('--no-trunc', "Don't truncate output")
    .action(async (opts: { all?: boolean; quiet?: boolean; filter: string[]; format?: string; last: string; latest?: boolean; size?: boolean; trunc: boolean }) => {
      let limit = intOption(opts.last, '--last')!;
      if (opts.latest) limit = 1;
      const list = await ctx.client().json<ContainerSummary[]>('GET', '/containers/json', {
        query: { all: Boolean(opts.all) || limit > 0, limit: limit > 0 ? limit : undefined, size: Boolean(opts.size) || undefined, filters: filtersJson(opts.filter) },
      });
      let format = opts.format;
      if (!format && opts.size && !opts.quiet) format = `${CONTAINER_FORMAT.table}\t{{.Size}}`;
      process.stdout.write(formatList(format, list.map((c) => containerRow(c, opts.trunc)), CONTAINER_FORMAT, Boolean(opts.quiet)));
    });
  if (grouped) ps.aliases(['ps', 'list']);
  parent.addCommand(ps);

  parent.addCommand(logsCommand('Fetch the logs of a container')
    .option('--until <string>', 'Show logs before a timestamp or relative (e.g. 42m)')
    .argument('<container>')
    .action(async (target: string, opts: LogFlags & { until?: string }) => {
      const tty = await isTty(ctx, target);
      const res = await ctx.client().stream('GET', `/containers/${encodeURIComponent(target)}/logs`, { query: { ...logQuery(opts), until: opts.until } });
      await pipeOutput(res, tty);
    }));

  parent.addCommand(command('exec', 'Run a command in a running container')
    .option('-d, --detach', 'Detached mode: run command in the background')
    .option('-i, --interactive', 'Keep STDIN open even if not attached')
    .option('-t, --tty', 'Allocate a pseudo-TTY')
    .option('-e, --env <list>', 'Set environment variables', collect, [])
    .option('-w, --workdir <string>', 'Working directory inside the container')
    .option('-u, --user <string>', 'Username or UID (format: <name|uid>[:<group|gid>])')
    .option('--privileged', 'Give extended privileges to the command')
    .argument('<container>').argument('<command...>').passThroughOptions()
    .action(async (target: string, cmd: string[], opts: { detach?: boolean; interactive?: boolean; tty?: boolean; env: string[]; workdir?: string; user?: string; privileged?: boolean }) => {
      const client = ctx.client();
      const detach = Boolean(opts.detach);
      const { Id } = await client.json<{ Id: string }>('POST', `/containers/${encodeURIComponent(target)}/exec`, {
        body: {
          AttachStdin: Boolean(opts.interactive) && !detach, AttachStdout: !detach, AttachStderr: !detach, Tty: Boolean(opts.tty),
          Cmd: cmd, Env: opts.env, WorkingDir: opts.workdir ?? '', User: opts.user ?? '', Privileged: Boolean(opts.privileged),
        },
      });
      if (detach) {
        await client.raw('POST', `/exec/${Id}/start`, { body: { Detach: true, Tty: Boolean(opts.tty) } });
        return;
      }
      const socket = await client.hijack(`/exec/${Id}/start`, { body: { Detach: false, Tty: Boolean(opts.tty) } });
      const session = interactive(socket, {
        tty: Boolean(opts.tty),
        stdin: Boolean(opts.interactive),
        resize: (h, w) => void client.raw('POST', `/exec/${Id}/resize`, { query: { h, w } }).catch(() => undefined),
      });
      await session.done;
      const info = await client.json<{ ExitCode: number | null }>('GET', `/exec/${Id}/json`);
      if (info.ExitCode) throw new CliExit('', info.ExitCode);
    }));

  parent.addCommand(command('wait', 'Block until one or more containers stop, then print their exit codes')
    .argument('<container...>')
    .action(async (targets: string[]) => {
      await forEachTarget(targets, async (c) => {
        const r = await ctx.client().json<{ StatusCode: number }>('POST', `/containers/${encodeURIComponent(c)}/wait`);
        return String(r.StatusCode);
      });
    }));

  parent.addCommand(command('top', 'Display the running processes of a container')
    .argument('<container>').argument('[ps_options...]')
    .action(async (target: string, psArgs: string[]) => {
      const r = await ctx.client().json<{ Titles: string[]; Processes: string[][] }>('GET', `/containers/${encodeURIComponent(target)}/top`, { query: { ps_args: psArgs.length ? psArgs.join(' ') : undefined } });
      process.stdout.write(renderTable([r.Titles, ...r.Processes], { minwidth: 20, padding: 3 }));
    }));

  parent.addCommand(command('stats', 'Display a live stream of container(s) resource usage statistics')
    .option('-a, --all', 'Show all containers (default shows just running)')
    .option('--no-stream', 'Disable streaming stats and only pull the first result')
    .option('--format <string>', 'Pretty-print stats using a Go template')
    .option('--no-trunc', 'Do not truncate output')
    .argument('[container...]')
    .action(async (targets: string[], opts: { all?: boolean; stream: boolean; format?: string; trunc: boolean }) => {
      const client = ctx.client();
      const names = targets.length ? targets
        : (await client.json<ContainerSummary[]>('GET', '/containers/json', { query: { all: Boolean(opts.all) } })).map((c) => c.Id);
      const sample = async () => Promise.all(names.map(async (n) => {
        try {
          return statsEntry(n, await client.json('GET', `/containers/${encodeURIComponent(n)}/stats`, { query: { stream: 0 } }));
        } catch (e) {
          if (targets.length) throw e;
          return { ...statsEntry(n, {}), invalid: true };
        }
      }));
      const render = async () => formatList(opts.format, (await sample()).map((e) => statsRow(e, opts.trunc)), STATS_FORMAT);
      if (!opts.stream) {
        process.stdout.write(await render());
        return;
      }
      for (;;) {
        const text = await render();
        process.stdout.write(`\x1b[2J\x1b[H${text}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }));

  parent.addCommand(command('port', 'List port mappings or a specific mapping for the container')
    .argument('<container>').argument('[private_port]')
    .action(async (target: string, port?: string) => {
      const c = await ctx.client().json<{ NetworkSettings: { Ports: Record<string, Array<{ HostIp: string; HostPort: string }> | null> | null } }>('GET', `/containers/${encodeURIComponent(target)}/json`);
      const lines = portLines(c.NetworkSettings.Ports ?? {}, port);
      if (port !== undefined && lines.length === 0) throw new CliExit(`Error: No public port '${port.includes('/') ? port : `${port}/tcp`}' published for ${target}`, 1);
      if (lines.length) process.stdout.write(`${lines.join('\n')}\n`);
    }));

  parent.addCommand(command('attach', "Attach local standard input, output, and error streams to a running container")
    .option('--no-stdin', 'Do not attach STDIN')
    .argument('<container>')
    .action(async (target: string, opts: { stdin: boolean }) => {
      const client = ctx.client();
      const c = await client.json<{ Id: string; Config: { Tty: boolean; OpenStdin: boolean }; State: { Running: boolean } }>('GET', `/containers/${encodeURIComponent(target)}/json`);
      if (!c.State.Running) throw new CliExit('You cannot attach to a stopped container, start it first', 1);
      const stdin = opts.stdin && c.Config.OpenStdin;
      const socket = await client.hijack(`/containers/${c.Id}/attach`, { query: { stream: 1, stdin, stdout: 1, stderr: 1 } });
      const session = interactive(socket, {
        tty: c.Config.Tty, stdin,
        resize: (h, w) => void client.raw('POST', `/containers/${c.Id}/resize`, { query: { h, w } }).catch(() => undefined),
      });
      await session.done;
      // The stream ends when the container does; its exit status is ours, as with docker attach.
      const result = await client.json<{ StatusCode: number }>('POST', `/containers/${c.Id}/wait`).catch(() => undefined);
      if (result?.StatusCode) throw new CliExit('', result.StatusCode);
    }));

  for (const [name, what] of [['pause', 'Pause all processes within one or more containers'], ['unpause', 'Unpause all processes within one or more containers']] as const) {
    parent.addCommand(command(name, what)
      .argument('<container...>')
      .action(async (targets: string[]) => {
        await forEachTarget(targets, async (c) => { await ctx.client().raw('POST', `/containers/${encodeURIComponent(c)}/${name}`); return c; });
      }));
  }

  parent.addCommand(command('diff', "Inspect changes to files or directories on a container's filesystem")
    .argument('<container>')
    .action(async (target: string) => {
      const changes = await ctx.client().json<Array<{ Path: string; Kind: number }> | null>('GET', `/containers/${encodeURIComponent(target)}/changes`);
      process.stdout.write((changes ?? []).map((ch) => `${['C', 'A', 'D'][ch.Kind] ?? '?'} ${ch.Path}\n`).join(''));
    }));

  parent.addCommand(command('export', "Export a container's filesystem as a tar archive")
    .option('-o, --output <string>', 'Write to a file, instead of STDOUT')
    .argument('<container>')
    .action(async (target: string, opts: { output?: string }) => {
      if (!opts.output && process.stdout.isTTY) throw new CliExit('cowardly refusing to save to a terminal. Use the -o flag or redirect', 1);
      const res = await ctx.client().stream('GET', `/containers/${encodeURIComponent(target)}/export`);
      await pipeline(res, opts.output ? createWriteStream(opts.output) : process.stdout);
    }));

  parent.addCommand(command('rename', 'Rename a container')
    .argument('<container>').argument('<new_name>')
    .action(async (target: string, name: string) => {
      await ctx.client().raw('POST', `/containers/${encodeURIComponent(target)}/rename`, { query: { name } });
    }));

  if (grouped) {
    parent.addCommand(command('inspect', 'Display detailed information on one or more containers')
      .option('-f, --format <string>', 'Format the output using the given Go template')
      .option('-s, --size', 'Display total file sizes')
      .argument('<container...>')
      .action(async (targets: string[], opts: { format?: string; size?: boolean }) => {
        await inspectMany(targets, opts.format, (t) => ctx.client().json('GET', `/containers/${encodeURIComponent(t)}/json`, { query: { size: opts.size || undefined } }), 'container');
      }));
    parent.addCommand(command('prune', 'Remove all stopped containers')
      .option('-f, --force', 'Do not prompt for confirmation')
      .option('--filter <filter>', 'Provide filter values (e.g. "until=<timestamp>")', collect, [])
      .action(async (opts: { force?: boolean; filter: string[] }) => {
        if (!opts.force && !(await confirm('WARNING! This will remove all stopped containers.'))) return;
        const r = await ctx.client().json<{ ContainersDeleted: string[] | null; SpaceReclaimed: number }>('POST', '/containers/prune', { query: { filters: filtersJson(opts.filter) } });
        if (r.ContainersDeleted?.length) process.stdout.write(`Deleted Containers:\n${r.ContainersDeleted.join('\n')}\n\n`);
        process.stdout.write(`Total reclaimed space: ${humanSize(r.SpaceReclaimed)}\n`);
      }));
  }
}

class CliexitMany extends CliExit {
  constructor() {
    super('Error: you cannot start and attach multiple containers at once', 1);
  }
}

/**
 * docker's inspect: a JSON array of what was found, then the errors; the exit status says
 * whether anything was missing.
 */
export async function inspectMany(targets: string[], format: string | undefined, fetch: (t: string) => Promise<unknown>, noun = 'object'): Promise<void> {
  const found: unknown[] = [];
  const errors: string[] = [];
  for (const t of targets) {
    try {
      found.push(await fetch(t));
    } catch (e) {
      if (e instanceof DaemonError && e.status === 404) errors.push(`Error: No such ${noun}: ${t}`);
      else throw e;
    }
  }
  if (found.length || !format) process.stdout.write(renderInspect(found, format));
  if (errors.length) throw new CliExit(errors.join('\n'), 1);
}
