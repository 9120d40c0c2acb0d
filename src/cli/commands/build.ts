/** `berth build`: sends the context as a tar to POST /build and prints the builder's stream. */
import { spawn } from 'node:child_process';
import { relative, resolve } from 'node:path';
import type { Command } from 'commander';
import { CliExit, command, type CliContext } from '../context.js';
import { collect } from '../runflags.js';

function pairs(list: string[]): Record<string, string> {
  return Object.fromEntries(list.map((a) => {
    const i = a.indexOf('=');
    return i < 0 ? [a, process.env[a] ?? ''] : [a.slice(0, i), a.slice(i + 1)];
  }));
}

export function buildCommand(parent: Command, ctx: CliContext): void {
  parent.addCommand(command('build', 'Build an image from a Dockerfile')
    .option('-t, --tag <name>', 'Name and optionally a tag in the "name:tag" format', collect, [])
    .option('-f, --file <string>', 'Name of the Dockerfile (default: "PATH/Dockerfile")')
    .option('--build-arg <list>', 'Set build-time variables', collect, [])
    .option('--label <list>', 'Set metadata for an image', collect, [])
    .option('--no-cache', 'Do not use cache when building the image')
    .option('--target <string>', 'Set the target build stage to build')
    .option('-q, --quiet', 'Suppress the build output and print image ID on success')
    .argument('<path>')
    .action(async (path: string, opts: { tag: string[]; file?: string; buildArg: string[]; label: string[]; cache: boolean; target?: string; quiet?: boolean }) => {
      const contextDir = resolve(path);
      const dockerfile = opts.file ? relative(contextDir, resolve(opts.file)) : 'Dockerfile';
      if (dockerfile.startsWith('..')) throw new CliExit('Error: the Dockerfile must be inside the build context', 1);
      const tar = spawn('tar', ['-c', '-C', contextDir, '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const res = await ctx.client().stream('POST', '/build', {
        query: {
          t: opts.tag.length ? opts.tag : undefined, dockerfile, buildargs: JSON.stringify(pairs(opts.buildArg)),
          labels: JSON.stringify(pairs(opts.label)), nocache: !opts.cache, target: opts.target, q: Boolean(opts.quiet),
        },
        body: tar.stdout, headers: { 'Content-Type': 'application/x-tar' },
      });
      let buf = '';
      let failure: string | undefined;
      const handle = (line: string) => {
        if (!line.trim()) return;
        const m = JSON.parse(line) as { stream?: string; error?: string; errorDetail?: { message?: string } };
        if (m.error || m.errorDetail) failure = m.errorDetail?.message ?? m.error;
        else if (m.stream) process.stdout.write(m.stream);
      };
      for await (const c of res) {
        buf += (c as Buffer).toString('utf8');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) { handle(buf.slice(0, nl)); buf = buf.slice(nl + 1); }
      }
      handle(buf);
      if (failure !== undefined) throw new CliExit(failure, 1);
    }));
}
