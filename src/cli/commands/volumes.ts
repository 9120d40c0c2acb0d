/** `berth volume …`: create, ls, inspect, rm, prune. */
import type { Command } from 'commander';
import { command, confirm, filtersJson, forEachTarget, type CliContext } from '../context.js';
import { formatList } from '../format/formatter.js';
import { humanSize } from '../format/human.js';
import { Struct } from '../gotemplate.js';
import { collect } from '../runflags.js';
import { inspectMany } from './containers.js';

interface Volume { Name: string; Driver: string; Mountpoint: string; Labels: Record<string, string> | null; Scope: string }

const VOLUME_FORMAT = {
  table: 'table {{.Driver}}\t{{.Name}}',
  headers: { Name: 'VOLUME NAME', Driver: 'DRIVER', Scope: 'SCOPE', Mountpoint: 'MOUNTPOINT', Labels: 'LABELS' },
  quiet: '{{.Name}}',
};

function volumeRow(v: Volume): Struct {
  return new Struct('*formatter.volumeContext', {
    Name: () => v.Name, Driver: () => v.Driver, Scope: () => v.Scope, Mountpoint: () => v.Mountpoint,
    Labels: () => Object.entries(v.Labels ?? {}).map(([k, x]) => `${k}=${x}`).sort().join(','),
    Label: (name: unknown) => v.Labels?.[String(name)] ?? '',
  });
}

export function volumeCommands(program: Command, ctx: CliContext): void {
  const volume = command('volume', 'Manage volumes');
  volume.addCommand(command('create', 'Create a volume')
    .option('-d, --driver <string>', 'Specify volume driver name', 'local')
    .option('--label <list>', 'Set metadata for a volume', collect, [])
    .option('-o, --opt <map>', 'Set driver specific options', collect, [])
    .argument('[name]')
    .action(async (name: string | undefined, opts: { driver: string; label: string[]; opt: string[] }) => {
      const pairs = (l: string[]) => Object.fromEntries(l.map((x) => { const i = x.indexOf('='); return i < 0 ? [x, ''] : [x.slice(0, i), x.slice(i + 1)]; }));
      const v = await ctx.client().json<Volume>('POST', '/volumes/create', { body: { Name: name ?? '', Driver: opts.driver, Labels: pairs(opts.label), DriverOpts: pairs(opts.opt) } });
      process.stdout.write(`${v.Name}\n`);
    }));
  volume.addCommand(command('ls', 'List volumes').aliases(['list'])
    .option('-f, --filter <filter>', 'Provide filter values (e.g. "dangling=true")', collect, [])
    .option('--format <string>', 'Pretty-print volumes using a Go template')
    .option('-q, --quiet', 'Only display volume names')
    .action(async (opts: { filter: string[]; format?: string; quiet?: boolean }) => {
      const r = await ctx.client().json<{ Volumes: Volume[] | null }>('GET', '/volumes', { query: { filters: filtersJson(opts.filter) } });
      const list = (r.Volumes ?? []).sort((a, b) => a.Name.localeCompare(b.Name));
      process.stdout.write(formatList(opts.format, list.map(volumeRow), VOLUME_FORMAT, Boolean(opts.quiet)));
    }));
  volume.addCommand(command('inspect', 'Display detailed information on one or more volumes')
    .option('-f, --format <string>', 'Format the output using the given Go template')
    .argument('<volume...>')
    .action(async (names: string[], opts: { format?: string }) => {
      await inspectMany(names, opts.format, (n) => ctx.client().json('GET', `/volumes/${encodeURIComponent(n)}`), 'volume');
    }));
  volume.addCommand(command('rm', 'Remove one or more volumes').aliases(['remove'])
    .option('-f, --force', 'Force the removal of one or more volumes')
    .argument('<volume...>')
    .action(async (names: string[], opts: { force?: boolean }) => {
      await forEachTarget(names, async (n) => { await ctx.client().raw('DELETE', `/volumes/${encodeURIComponent(n)}`, { query: { force: Boolean(opts.force) } }); return n; });
    }));
  volume.addCommand(command('prune', 'Remove all unused local volumes')
    .option('-f, --force', 'Do not prompt for confirmation')
    .option('--filter <filter>', 'Provide filter values (e.g. "label=<label>")', collect, [])
    .action(async (opts: { force?: boolean; filter: string[] }) => {
      if (!opts.force && !(await confirm('WARNING! This will remove all local volumes not used by at least one container.'))) return;
      const r = await ctx.client().json<{ VolumesDeleted: string[] | null; SpaceReclaimed: number }>('POST', '/volumes/prune', { query: { filters: filtersJson(opts.filter) } });
      if (r.VolumesDeleted?.length) process.stdout.write(`Deleted Volumes:\n${r.VolumesDeleted.join('\n')}\n\n`);
      process.stdout.write(`Total reclaimed space: ${humanSize(r.SpaceReclaimed ?? 0)}\n`);
    }));
  program.addCommand(volume);
}

