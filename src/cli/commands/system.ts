/** version, info, events, system prune/df, and the type-guessing top-level inspect. */
import type { Command } from 'commander';
import { API_VERSION, DaemonError, parseHost } from '../client.js';
import { dialStdio } from '../remote.js';
import { CliExit, command, confirm, filtersJson, type CliContext } from '../context.js';
import { renderInspect } from '../format/formatter.js';
import { humanSize, bytesSize } from '../format/human.js';
import { Template } from '../gotemplate.js';
import { collect } from '../runflags.js';
import { VERSION as CLI_VERSION } from '../../daemon/paths.js';

function renderWith(format: string, data: unknown): string {
  const body = format === 'json' ? '{{json .}}' : format;
  return `${new Template(body).execute(data)}\n`;
}

function goArch(): string {
  return process.arch === 'x64' ? 'amd64' : process.arch;
}

/** Key/value block with docker's alignment: values start in the same column. */
function block(indent: string, rows: Array<[string, unknown]>): string {
  const width = Math.max(...rows.map(([k]) => k.length)) + 1;
  // docker's version template puts every value in column 20, whatever the nesting
  return rows.map(([k, v]) => `${indent}${`${k}:`.padEnd(Math.max(20 - indent.length, width))}${v}\n`).join('');
}

export function systemCommands(program: Command, ctx: CliContext): void {
  program.addCommand(command('version', 'Show the berth version information')
    .option('-f, --format <string>', 'Format the output using the given Go template')
    .action(async (opts: { format?: string }) => {
      const clientInfo = { Version: CLI_VERSION, ApiVersion: API_VERSION, DefaultAPIVersion: API_VERSION, GoVersion: `node ${process.version}`, Os: 'linux', Arch: goArch(), Context: 'default' };
      let server: Record<string, any> | undefined;
      let failure: unknown;
      try {
        server = await ctx.client().json('GET', '/version');
      } catch (e) {
        failure = e;
      }
      if (opts.format) {
        process.stdout.write(renderWith(opts.format, { Client: clientInfo, Server: server ?? null }));
      } else {
        let out = `Client:\n${block(' ', [['Version', clientInfo.Version], ['API version', clientInfo.ApiVersion], ['Node version', process.version], ['OS/Arch', `linux/${goArch()}`], ['Context', 'default']])}`;
        if (server) {
          out += `\nServer: ${server.Platform?.Name ?? 'berth'}\n`;
          for (const c of (server.Components ?? []) as Array<{ Name: string; Version: string; Details: Record<string, string> }>) {
            const rows: Array<[string, unknown]> = [['Version', c.Version]];
            if (c.Name === 'Engine') {
              rows.push(['API version', `${server.ApiVersion} (minimum version ${server.MinAPIVersion})`], ['Node version', String(server.GoVersion).replace(/^node /, '')], ['OS/Arch', `${server.Os}/${server.Arch}`], ['Kernel', server.KernelVersion]);
            } else if (c.Details?.GitCommit) rows.push(['GitCommit', c.Details.GitCommit]);
            out += ` ${c.Name}:\n${block('  ', rows)}`;
          }
        }
        process.stdout.write(out);
      }
      if (failure) throw failure;
    }));

  const info = async (opts: { format?: string }) => {
      const i = await ctx.client().json<Record<string, any>>('GET', '/info');
      if (opts.format) {
        process.stdout.write(renderWith(opts.format, i));
        return;
      }
      const rows: Array<[string, unknown]> = [
        ['Containers', i.Containers], [' Running', i.ContainersRunning], [' Paused', i.ContainersPaused], [' Stopped', i.ContainersStopped],
        ['Images', i.Images], ['Server Version', i.ServerVersion], ['Storage Driver', i.Driver], ['Logging Driver', i.LoggingDriver],
        ['Cgroup Driver', i.CgroupDriver], ['Cgroup Version', i.CgroupVersion], ['Default Runtime', i.DefaultRuntime ?? 'runc'],
        ['Kernel Version', i.KernelVersion], ['Operating System', i.OperatingSystem], ['OSType', i.OSType ?? 'linux'],
        ['Architecture', i.Architecture], ['CPUs', i.NCPU], ['Total Memory', bytesSize(i.MemTotal ?? 0)], ['Name', i.Name],
        ['ID', i.ID ?? ''], ['Docker Root Dir', i.DockerRootDir], ['Debug Mode', Boolean(i.Debug)],
      ];
      process.stdout.write(`Server:\n${rows.map(([k, v]) => ` ${k}: ${v}\n`).join('')}${swarmLines(i.Swarm)}`);
      for (const w of (i.Warnings ?? []) as string[]) process.stderr.write(`${w}\n`);
    };
  /** docker info's Swarm part, the lines that say what this node is in the swarm. */
  const swarmLines = (sw: { LocalNodeState?: string; NodeID?: string; NodeAddr?: string; ControlAvailable?: boolean; Error?: string; Managers?: number; Nodes?: number; Cluster?: { ID: string }; RemoteManagers?: Array<{ Addr: string }> | null } | undefined): string => {
    if (!sw) return '';
    const L = [` Swarm: ${sw.LocalNodeState ?? 'inactive'}`];
    if (sw.LocalNodeState === 'active') {
      L.push(`  NodeID: ${sw.NodeID}`);
      if (sw.Error) L.push(`  Error: ${sw.Error}`);
      L.push(`  Is Manager: ${Boolean(sw.ControlAvailable)}`);
      if (sw.ControlAvailable && sw.Cluster) L.push(`  ClusterID: ${sw.Cluster.ID}`, `  Managers: ${sw.Managers}`, `  Nodes: ${sw.Nodes}`);
      L.push(`  Node Address: ${sw.NodeAddr}`);
      if (sw.RemoteManagers?.length) L.push('  Manager Addresses:', ...sw.RemoteManagers.map((m) => `   ${m.Addr}`).sort());
    }
    return `${L.join('\n')}\n`;
  };
  const infoCommand = (name: string) => command(name, 'Display system-wide information')
    .option('-f, --format <string>', 'Format the output using the given Go template')
    .action(info);
  program.addCommand(infoCommand('info'));

  program.addCommand(command('events', 'Get real time events from the server')
    .option('-f, --filter <filter>', 'Filter output based on conditions provided', collect, [])
    .option('--format <string>', 'Format the output using the given Go template')
    .option('--since <string>', 'Show all events created since timestamp')
    .option('--until <string>', 'Stream events until this timestamp')
    .action(async (opts: { filter: string[]; format?: string; since?: string; until?: string }) => {
      const res = await ctx.client().stream('GET', '/events', { query: { filters: filtersJson(opts.filter), since: opts.since, until: opts.until } });
      let buf = '';
      for await (const chunk of res) {
        buf += (chunk as Buffer).toString('utf8');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const ev = JSON.parse(line) as { Type: string; Action: string; Actor: { ID: string; Attributes?: Record<string, string> }; timeNano: number };
          if (opts.format) {
            process.stdout.write(renderWith(opts.format, ev));
            continue;
          }
          const when = new Date(Math.floor(ev.timeNano / 1e6)).toISOString().replace('Z', '');
          const attrs = Object.entries(ev.Actor.Attributes ?? {}).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(', ');
          process.stdout.write(`${when}${String(ev.timeNano % 1e6).padStart(6, '0')}Z ${ev.Type} ${ev.Action} ${ev.Actor.ID}${attrs ? ` (${attrs})` : ''}\n`);
        }
      }
    }));

  const system = command('system', 'Manage berth');
  system.addCommand(command('prune', 'Remove unused data')
    .option('-a, --all', 'Remove all unused images not just dangling ones')
    .option('-f, --force', 'Do not prompt for confirmation')
    .option('--filter <filter>', 'Provide filter values (e.g. "label=<key>=<value>")', collect, [])
    .action(async (opts: { all?: boolean; force?: boolean; filter: string[] }) => {
      const warning = `WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - ${opts.all ? 'all images without at least one container associated to them' : 'all dangling images'}\n`;
      if (!opts.force && !(await confirm(warning))) return;
      const client = ctx.client();
      const filters = filtersJson(opts.filter);
      let reclaimed = 0;
      const c = await client.json<{ ContainersDeleted: string[] | null; SpaceReclaimed: number }>('POST', '/containers/prune', { query: { filters } });
      if (c.ContainersDeleted?.length) process.stdout.write(`Deleted Containers:\n${c.ContainersDeleted.join('\n')}\n\n`);
      reclaimed += c.SpaceReclaimed ?? 0;
      const n = await client.json<{ NetworksDeleted: string[] | null }>('POST', '/networks/prune', { query: { filters } });
      if (n.NetworksDeleted?.length) process.stdout.write(`Deleted Networks:\n${n.NetworksDeleted.join('\n')}\n\n`);
      const imageFilters = filtersJson([...opts.filter, ...(opts.all ? ['dangling=false'] : [])]);
      const i = await client.json<{ ImagesDeleted: Array<{ Untagged?: string; Deleted?: string }> | null; SpaceReclaimed: number }>('POST', '/images/prune', { query: { filters: imageFilters } });
      if (i.ImagesDeleted?.length) process.stdout.write(`Deleted Images:\n${i.ImagesDeleted.map((e) => (e.Untagged ? `untagged: ${e.Untagged}` : `deleted: ${e.Deleted}`)).join('\n')}\n\n`);
      reclaimed += i.SpaceReclaimed ?? 0;
      process.stdout.write(`Total reclaimed space: ${humanSize(reclaimed)}\n`);
    }));
  system.addCommand(infoCommand('info'));
  // What `docker -H ssh://…` and `berth -H ssh://…` run on the remote host (README: Remote hosts).
  system.addCommand(command('dial-stdio', 'Proxy the stdio stream to the daemon connection (run by ssh:// clients on the remote host)')
    .action(async () => {
      const target = parseHost(ctx.client().host);
      if (target.ssh) throw new CliExit('Error: dial-stdio needs a local daemon socket (unix:// or tcp://), not an ssh:// host', 1);
      await dialStdio(target).catch((e: NodeJS.ErrnoException) => {
        throw new CliExit(`Cannot connect to berthd at ${ctx.client().host}: ${e.code ?? e.message}. Is berthd running?`, 1);
      });
    }));
  program.addCommand(system);

  program.addCommand(command('inspect', 'Return low-level information on berth objects')
    .option('-f, --format <string>', 'Format the output using the given Go template')
    .option('--type <string>', 'Return JSON for specified type (container, image, network)')
    .option('-s, --size', 'Display total file sizes if the type is container')
    .argument('<name...>')
    .action(async (targets: string[], opts: { format?: string; type?: string; size?: boolean }) => {
      const client = ctx.client();
      const kinds: Array<[string, (t: string) => string]> = [
        ['container', (t) => `/containers/${encodeURIComponent(t)}/json`],
        ['image', (t) => `/images/${t}/json`],
        ['network', (t) => `/networks/${encodeURIComponent(t)}`],
      ];
      if (opts.type && !kinds.some(([k]) => k === opts.type)) throw new CliExit(`"${opts.type}" is not a valid value for --type`, 1);
      const found: unknown[] = [];
      const errors: string[] = [];
      for (const t of targets) {
        let hit: unknown;
        for (const [kind, path] of kinds) {
          if (opts.type && kind !== opts.type) continue;
          try {
            hit = await client.json('GET', path(t), { query: kind === 'container' && opts.size ? { size: 1 } : undefined });
            break;
          } catch (e) {
            if (!(e instanceof DaemonError && e.status === 404)) throw e;
          }
        }
        if (hit === undefined) errors.push(`Error: No such ${opts.type ?? 'object'}: ${t}`);
        else found.push(hit);
      }
      if (found.length || !opts.format) process.stdout.write(renderInspect(found, opts.format));
      if (errors.length) throw new CliExit(errors.join('\n'), 1);
    }));
}
