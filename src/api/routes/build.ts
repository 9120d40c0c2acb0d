/** POST /build: the classic builder over a tar context, streaming Docker's build messages. */
import { promises as fs } from 'node:fs';
import { build, BuildError } from '../../builder/builder.js';
import { BadRequestError, errorMessage } from '../../util/errors.js';
import { untar } from '../../util/untar.js';
import type { ApiContext } from '../context.js';
import { boolParam } from '../http.js';
import type { RequestContext, Router } from '../router.js';

function jsonParam(ctx: RequestContext, name: string): Record<string, string> {
  const v = ctx.query.get(name);
  if (!v) return {};
  try {
    const o = JSON.parse(v) as Record<string, string | null>;
    return Object.fromEntries(Object.entries(o).filter((e): e is [string, string] => typeof e[1] === 'string'));
  } catch {
    throw new BadRequestError(`invalid ${name}: not a JSON object`);
  }
}

export function buildRoutes(r: Router, api: ApiContext): void {
  r.post('/build', async (ctx) => {
    const images = api.engine.images;
    const q = ctx.query;
    const quiet = boolParam(q.get('q'));
    const opts = {
      dockerfile: q.get('dockerfile') || 'Dockerfile',
      tags: q.getAll('t').filter(Boolean),
      buildArgs: jsonParam(ctx, 'buildargs'),
      labels: jsonParam(ctx, 'labels'),
      noCache: boolParam(q.get('nocache')),
      target: q.get('target') || undefined,
    };
    const dir = images.scratchPath('context');
    const spool = `${dir}.tar`;
    let started = false;
    const write = (m: object) => {
      if (!started) { started = true; ctx.res.writeHead(200, { 'Content-Type': 'application/json' }); }
      ctx.res.write(JSON.stringify(m) + '\r\n');
    };
    try {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      await fs.writeFile(spool, '');
      const fh = await fs.open(spool, 'w');
      try { for await (const c of ctx.req) await fh.write(c as Buffer); } finally { await fh.close(); }
      // GNU tar detects gzip/bzip2/xz contexts by itself.
      await untar(spool, dir, ['--no-same-owner', '--no-same-permissions']).catch((e: unknown) => {
        if (!(e instanceof BadRequestError)) throw e;
        throw new BadRequestError(`invalid build context: ${e.message.replace(/^invalid tar archive: /, '')}`);
      });
      const id = await build({
        engine: api.engine, images, root: api.info.root,
        pull: api.registry ? (ref) => api.registry!.pull(ref, {}, () => undefined) : undefined,
      }, dir, opts, (text) => { if (!quiet) write({ stream: text }); });
      write({ aux: { ID: id } });
      if (quiet) write({ stream: `${id}\n` });
      else {
        write({ stream: `Successfully built ${id.slice(7, 19)}\n` });
        for (const t of opts.tags) write({ stream: `Successfully tagged ${t.includes(':') && t.lastIndexOf(':') > t.lastIndexOf('/') ? t : `${t}:latest`}\n` });
      }
      api.engine.events.emit('image', 'build', id);
    } catch (e) {
      if (!started) throw e;
      write({ errorDetail: { ...(e instanceof BuildError ? { code: e.code } : {}), message: errorMessage(e) }, error: errorMessage(e) });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
      await fs.rm(spool, { force: true });
    }
    ctx.res.end();
  });
}
