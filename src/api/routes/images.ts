import { applyChanges } from '../../images/changes.js';
import { parseReference } from '../../images/reference.js';
import { BadRequestError, errorMessage, NotFoundError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { boolParam, checkFilterKeys, labelsMatch, parseFilters, sendJson } from '../http.js';
import type { RequestContext, Router } from '../router.js';
import { buildRoutes } from './build.js';
import { distributionRoutes, pullImage } from './distribution.js';

/** Streams of JSON messages (progress, load output) end with an error message on failure, as Docker's do. */
function jsonStream(ctx: RequestContext) {
  ctx.res.writeHead(200, { 'Content-Type': 'application/json' });
  return {
    send: (m: object) => ctx.res.write(JSON.stringify(m) + '\r\n'),
    fail: (e: unknown) => ctx.res.write(JSON.stringify({ errorDetail: { message: errorMessage(e) }, error: errorMessage(e) }) + '\r\n'),
    end: () => ctx.res.end(),
  };
}

function splitRepoTag(repo: string, tag: string | null): string {
  if (tag) return `${repo}:${tag}`;
  return repo;
}

async function createImage(api: ApiContext, ctx: RequestContext): Promise<void> {
  const q = ctx.query;
  const fromSrc = q.get('fromSrc');
  const fromImage = q.get('fromImage');
  if (fromSrc !== null) {
    if (fromSrc !== '-') throw new BadRequestError('importing from a URL is not supported: send the tarball in the request body (fromSrc=-)');
    const repo = q.get('repo');
    const changes = q.getAll('changes').flatMap((c) => c.split('\n')).filter((c) => c.trim() !== '');
    const repoTag = repo ? splitRepoTag(repo, q.get('tag')) : undefined;
    // Checked before the stream starts, as Docker does (ImportImage parses both first): a bad
    // change or name is a 400, not a 200 whose body ends in an error.
    applyChanges({}, changes);
    if (repoTag) parseReference(repoTag);
    // Nothing is sent before the archive is in: a refused one is then the error's own status (a
    // 400 for a bad tar), as Docker answers an import that failed before its output was flushed.
    const img = await api.engine.images.importRootfs(ctx.req, {
      repoTag,
      changes, message: q.get('message') ?? undefined, platform: q.get('platform') ?? undefined,
    });
    api.engine.events.emit('image', 'import', img.id);
    const out = jsonStream(ctx);
    out.send({ status: img.id });
    out.end();
    return;
  }
  if (fromImage !== null) return pullImage(api, ctx, fromImage);
  throw new BadRequestError('fromImage or fromSrc must be given');
}

export function imageRoutes(r: Router, api: ApiContext): void {
  const images = () => api.engine.images;
  const inUse = (id: string) => api.engine.imageInUse(id);

  r.get('/images/json', (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    checkFilterKeys(filters, ['dangling', 'label', 'reference', 'before', 'since']);
    const all = images().summaries(boolParam(ctx.query.get('all'))) as Array<{ Id: string; RepoTags: string[]; Labels: Record<string, string> | null; Containers: number }>;
    const dangling = filters.get('dangling')?.[0];
    const refs = filters.get('reference');
    const list = all.filter((s) => {
      const isDangling = s.RepoTags.length === 0 || s.RepoTags.every((t) => t === '<none>:<none>');
      if (dangling === 'true' && !isDangling) return false;
      if (dangling === 'false' && isDangling) return false;
      if (filters.get('label') && !labelsMatch(s.Labels, filters.get('label')!)) return false;
      if (refs && !refs.some((ref) => s.RepoTags.some((t) => globMatch(ref, t) || globMatch(ref, t.replace(/:[^:/]+$/, ''))))) return false;
      return true;
    }).map((s) => ({ ...s, Containers: api.engine.list().filter((c) => c.Image === s.Id).length }));
    sendJson(ctx.res, 200, list);
  });
  r.post('/images/create', (ctx) => createImage(api, ctx));
  r.post('/images/load', async (ctx) => {
    const quiet = boolParam(ctx.query.get('quiet'));
    const out = jsonStream(ctx);
    try {
      const lines = await images().load(ctx.req);
      for (const l of lines) {
        api.engine.events.emit('image', 'load', l.replace(/^Loaded image( ID)?: /, ''));
        if (!quiet) out.send({ stream: `${l}\n` });
      }
      if (quiet) for (const l of lines) out.send({ stream: `${l}\n` });
    } catch (e) {
      out.fail(e);
    }
    out.end();
  });
  r.get('/images/get', async (ctx) => {
    const names = ctx.query.getAll('names');
    if (names.length === 0) throw new BadRequestError('no images given: use names=IMAGE');
    for (const n of names) images().get(n);
    ctx.res.writeHead(200, { 'Content-Type': 'application/x-tar' });
    await images().save(names, ctx.res);
    ctx.res.end();
  });
  r.post('/images/prune', async (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    checkFilterKeys(filters, ['dangling', 'label', 'until']);
    const all = filters.get('dangling')?.[0] === 'false' || filters.get('dangling')?.[0] === '0';
    const out = await images().prune({ all }, inUse);
    for (const d of out.ImagesDeleted) if (d.Deleted) api.engine.events.emit('image', 'delete', d.Deleted);
    sendJson(ctx.res, 200, { ImagesDeleted: out.ImagesDeleted.length ? out.ImagesDeleted : null, SpaceReclaimed: out.SpaceReclaimed });
  });
  r.get('/images/{name*}/json', (ctx) => {
    const ref = ctx.params.name!;
    let img;
    try { img = images().get(ref); } catch (e) {
      // Docker 20.10's inspect says it twice: "no such image: busybox2: No such image: busybox2:latest".
      if (e instanceof NotFoundError) throw new NotFoundError(`no such image: ${ref}: ${e.message}`);
      throw e;
    }
    sendJson(ctx.res, 200, images().inspect(img));
  });
  r.get('/images/{name*}/get', async (ctx) => {
    images().get(ctx.params.name!);
    ctx.res.writeHead(200, { 'Content-Type': 'application/x-tar' });
    await images().save([ctx.params.name!], ctx.res);
    ctx.res.end();
  });
  r.get('/images/{name*}/history', (ctx) => {
    const img = images().get(ctx.params.name!);
    const created = Math.floor(Date.parse(img.config.created ?? img.added) / 1000);
    const hist = (img.config.history ?? []).map((h, i, arr) => ({
      Id: i === arr.length - 1 ? img.id : '<missing>',
      Created: h.created ? Math.floor(Date.parse(h.created) / 1000) : created,
      CreatedBy: h.created_by ?? '',
      Tags: i === arr.length - 1 ? img.repoTags : null,
      Size: 0,
      Comment: h.comment ?? '',
    })).reverse();
    sendJson(ctx.res, 200, hist.length ? hist : [{ Id: img.id, Created: created, CreatedBy: '', Tags: img.repoTags, Size: img.size, Comment: '' }]);
  });
  r.post('/images/{name*}/tag', async (ctx) => {
    const repo = ctx.query.get('repo');
    if (!repo) throw new BadRequestError('repository name must be given');
    const img = images().get(ctx.params.name!);
    await images().tag(ctx.params.name!, repo, ctx.query.get('tag') || undefined);
    api.engine.events.emit('image', 'tag', img.id, { name: splitRepoTag(repo, ctx.query.get('tag')) });
    ctx.res.writeHead(201);
    ctx.res.end();
  });
  distributionRoutes(r, api);
  buildRoutes(r, api);
  r.delete('/images/{name*}', async (ctx) => {
    const items = await images().remove(ctx.params.name!, {
      force: boolParam(ctx.query.get('force')), noprune: boolParam(ctx.query.get('noprune')),
    }, inUse);
    for (const it of items) {
      if (it.Untagged) api.engine.events.emit('image', 'untag', it.Untagged);
      if (it.Deleted) api.engine.events.emit('image', 'delete', it.Deleted);
    }
    sendJson(ctx.res, 200, items);
  });
}

function globMatch(pattern: string, text: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '.')}$`);
  return re.test(text);
}

