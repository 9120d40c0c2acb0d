/** Image commands: images/ls, import, load, save, tag, rmi/rm, inspect, history, prune. */
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { CliExit, command, confirm, filtersJson, forEachTarget, type CliContext } from '../context.js';
import { IMAGE_FORMAT, IMAGE_FORMAT_DIGESTS, imageLines, imageRow, type ImageSummary } from '../format/contexts.js';
import { formatList } from '../format/formatter.js';
import { ago, humanSize, truncateId } from '../format/human.js';
import { renderTable } from '../format/table.js';
import { collect } from '../runflags.js';
import { printJsonMessages } from '../streams.js';
import { inspectMany } from './containers.js';
import { buildCommand } from './build.js';
import { registryCommands } from './registry.js';

/** `name[:tag]` → repo and tag, minding registry ports (`host:5000/x`). */
export function splitTag(ref: string): { repo: string; tag?: string } {
  const colon = ref.lastIndexOf(':');
  if (colon > ref.lastIndexOf('/') && colon >= 0) return { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { repo: ref };
}

export function imageCommands(parent: Command, ctx: CliContext, grouped: boolean): void {
  const ls = command(grouped ? 'ls' : 'images', 'List images')
    .option('-a, --all', 'Show all images (default hides intermediate images)')
    .option('-q, --quiet', 'Only show image IDs')
    .option('--digests', 'Show digests')
    .option('-f, --filter <filter>', 'Filter output based on conditions provided', collect, [])
    .option('--format <string>', 'Pretty-print images using a Go template')
    .option('--no-trunc', "Don't truncate output")
    .argument('[repository]')
    .action(async (repository: string | undefined, opts: { all?: boolean; quiet?: boolean; digests?: boolean; filter: string[]; format?: string; trunc: boolean }) => {
      const filters = [...opts.filter, ...(repository ? [`reference=${repository}`] : [])];
      const list = await ctx.client().json<ImageSummary[]>('GET', '/images/json', { query: { all: Boolean(opts.all), filters: filtersJson(filters) } });
      const format = opts.format ?? (opts.digests ? IMAGE_FORMAT_DIGESTS : undefined);
      const rows = imageLines(list, Boolean(opts.digests)).map((l) => imageRow(l, opts.trunc));
      // -q lists each image once even when it has several tags
      if (opts.quiet) {
        const seen = new Set<string>();
        const ids = list.map((i) => (opts.trunc ? truncateId(i.Id) : i.Id)).filter((id) => !seen.has(id) && seen.add(id));
        if (ids.length) process.stdout.write(`${ids.join('\n')}\n`);
        return;
      }
      process.stdout.write(formatList(format, rows, IMAGE_FORMAT));
    });
  if (grouped) ls.aliases(['list']);
  parent.addCommand(ls);
  registryCommands(parent, ctx, grouped);
  buildCommand(parent, ctx);

  parent.addCommand(command('import', 'Import the contents from a tarball to create a filesystem image')
    .option('-m, --message <string>', 'Set commit message for imported image')
    .option('-c, --change <list>', 'Apply Dockerfile instruction to the created image', collect, [])
    .argument('<file>', 'a tarball, or - for stdin').argument('[repository]')
    .action(async (file: string, repository: string | undefined, opts: { message?: string; change: string[] }) => {
      const { repo, tag } = repository ? splitTag(repository) : { repo: undefined, tag: undefined };
      const body = file === '-' ? process.stdin : createReadStream(file);
      const res = await ctx.client().stream('POST', '/images/create', {
        query: { fromSrc: '-', repo, tag, message: opts.message, changes: opts.change.length ? opts.change : undefined },
        body, headers: { 'Content-Type': 'application/x-tar' },
      });
      await printJsonMessages(res);
    }));

  parent.addCommand(command('load', 'Load an image from a tar archive or STDIN')
    .option('-i, --input <string>', 'Read from tar archive file, instead of STDIN')
    .option('-q, --quiet', 'Suppress the load output')
    .action(async (opts: { input?: string; quiet?: boolean }) => {
      if (!opts.input && process.stdin.isTTY) throw new CliExit('Error: requested load from stdin, but stdin is empty', 1);
      const body = opts.input ? createReadStream(opts.input) : process.stdin;
      const res = await ctx.client().stream('POST', '/images/load', { query: { quiet: Boolean(opts.quiet) }, body, headers: { 'Content-Type': 'application/x-tar' } });
      await printJsonMessages(res);
    }));

  parent.addCommand(command('save', 'Save one or more images to a tar archive (streamed to STDOUT by default)')
    .option('-o, --output <string>', 'Write to a file, instead of STDOUT')
    .argument('<image...>')
    .action(async (images: string[], opts: { output?: string }) => {
      if (!opts.output && process.stdout.isTTY) throw new CliExit('cowardly refusing to save to a terminal. Use the -o flag or redirect', 1);
      const res = await ctx.client().stream('GET', '/images/get', { query: { names: images } });
      await pipeline(res, opts.output ? createWriteStream(opts.output) : process.stdout);
    }));

  parent.addCommand(command('tag', 'Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE')
    .argument('<source>').argument('<target>')
    .action(async (source: string, target: string) => {
      const { repo, tag } = splitTag(target);
      await ctx.client().raw('POST', `/images/${source}/tag`, { query: { repo, tag } });
    }));

  const rmi = command(grouped ? 'rm' : 'rmi', 'Remove one or more images')
    .option('-f, --force', 'Force removal of the image')
    .option('--no-prune', 'Do not delete untagged parents')
    .argument('<image...>')
    .action(async (images: string[], opts: { force?: boolean; prune: boolean }) => {
      await forEachTarget(images, async (img) => {
        const r = await ctx.client().json<Array<{ Untagged?: string; Deleted?: string }>>('DELETE', `/images/${img}`, { query: { force: Boolean(opts.force), noprune: !opts.prune } });
        return r.map((e) => (e.Untagged ? `Untagged: ${e.Untagged}` : `Deleted: ${e.Deleted}`)).join('\n');
      });
    });
  if (grouped) rmi.aliases(['remove', 'rmi']);
  parent.addCommand(rmi);

  parent.addCommand(command('history', 'Show the history of an image')
    .option('-H, --human', 'Print sizes and dates in human readable format', true)
    .option('-q, --quiet', 'Only show image IDs')
    .option('--no-trunc', "Don't truncate output")
    .argument('<image>')
    .action(async (image: string, opts: { quiet?: boolean; trunc: boolean }) => {
      const h = await ctx.client().json<Array<{ Id: string; Created: number; CreatedBy: string; Size: number; Comment: string }>>('GET', `/images/${image}/history`);
      const id = (x: string) => (x === '<missing>' ? x : opts.trunc ? truncateId(x) : x);
      if (opts.quiet) {
        process.stdout.write(h.map((e) => `${id(e.Id)}\n`).join(''));
        return;
      }
      const rows = [['IMAGE', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT'], ...h.map((e) => [
        id(e.Id), ago(e.Created), opts.trunc && e.CreatedBy.length > 45 ? `${e.CreatedBy.slice(0, 44)}…` : e.CreatedBy, humanSize(e.Size), e.Comment,
      ])];
      process.stdout.write(renderTable(rows));
    }));

  if (grouped) {
    parent.addCommand(command('inspect', 'Display detailed information on one or more images')
      .option('-f, --format <string>', 'Format the output using the given Go template')
      .argument('<image...>')
      .action(async (images: string[], opts: { format?: string }) => {
        await inspectMany(images, opts.format, (i) => ctx.client().json('GET', `/images/${i}/json`), 'image');
      }));
    parent.addCommand(command('prune', 'Remove unused images')
      .option('-a, --all', 'Remove all unused images, not just dangling ones')
      .option('-f, --force', 'Do not prompt for confirmation')
      .option('--filter <filter>', 'Provide filter values (e.g. "until=<timestamp>")', collect, [])
      .action(async (opts: { all?: boolean; force?: boolean; filter: string[] }) => {
        const warning = opts.all ? 'WARNING! This will remove all images without at least one container associated to them.' : 'WARNING! This will remove all dangling images.';
        if (!opts.force && !(await confirm(warning))) return;
        const filters = [...opts.filter, ...(opts.all ? ['dangling=false'] : [])];
        const r = await ctx.client().json<{ ImagesDeleted: Array<{ Untagged?: string; Deleted?: string }> | null; SpaceReclaimed: number }>('POST', '/images/prune', { query: { filters: filtersJson(filters) } });
        if (r.ImagesDeleted?.length) {
          process.stdout.write(`Deleted Images:\n${r.ImagesDeleted.map((e) => (e.Untagged ? `untagged: ${e.Untagged}` : `deleted: ${e.Deleted}`)).join('\n')}\n\n`);
        }
        process.stdout.write(`Total reclaimed space: ${humanSize(r.SpaceReclaimed)}\n`);
      }));
  }
}
