/** Registry routes: pull (POST /images/create?fromImage=), push, and POST /auth. */
import { ApiError, BadRequestError, errorMessage } from '../../util/errors.js';
import { decodeRegistryAuth, normaliseAuth, type AuthConfig } from '../../images/registry/auth.js';
import { joinFromImage } from '../../images/registry/reference.js';
import type { JsonMessage } from '../../images/registry/progress.js';
import type { ApiContext } from '../context.js';
import { readBodyBuffer, sendJson } from '../http.js';
import type { RequestContext, Router } from '../router.js';

/**
 * A JSON message stream whose 200 header goes out with the first message: until then a failure
 * is still an HTTP error status (404 for an unknown tag), which is how Docker answers too and what
 * the docker CLI's `run` relies on.
 */
function lazyStream(ctx: RequestContext) {
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    ctx.res.writeHead(200, { 'Content-Type': 'application/json' });
  };
  return {
    get started() { return started; },
    send: (m: JsonMessage) => { start(); ctx.res.write(JSON.stringify(m) + '\r\n'); },
    fail: (e: unknown) => { start(); ctx.res.write(JSON.stringify({ errorDetail: { message: errorMessage(e) }, error: errorMessage(e) }) + '\r\n'); },
    end: () => { start(); ctx.res.end(); },
  };
}

function registry(api: ApiContext) {
  if (!api.registry) throw new ApiError(501, 'this daemon has no registry client');
  return api.registry;
}

export async function pullImage(api: ApiContext, ctx: RequestContext, fromImage: string): Promise<void> {
  const ref = joinFromImage(fromImage, ctx.query.get('tag'));
  const auth = decodeRegistryAuth(ctx.req.headers['x-registry-auth']);
  const out = lazyStream(ctx);
  try {
    await registry(api).pull(ref, { platform: ctx.query.get('platform') || undefined, auth }, out.send);
    // Docker's pull event names the image by the reference pulled, not by id.
    api.engine.events.emit('image', 'pull', ref, { name: ref });
  } catch (e) {
    if (!out.started) throw e;
    out.fail(e);
  }
  out.end();
}

export function distributionRoutes(r: Router, api: ApiContext): void {
  r.post('/images/{name*}/push', async (ctx) => {
    const auth = decodeRegistryAuth(ctx.req.headers['x-registry-auth']);
    const out = lazyStream(ctx);
    try {
      await registry(api).push(ctx.params.name!, ctx.query.get('tag') || undefined, auth, out.send);
      const tag = ctx.query.get('tag');
      api.engine.events.emit('image', 'push', tag ? `${ctx.params.name!}:${tag}` : ctx.params.name!, { name: ctx.params.name! });
    } catch (e) {
      if (!out.started) throw e;
      out.fail(e);
    }
    out.end();
  });

  r.post('/auth', async (ctx) => {
    const raw = await readBodyBuffer(ctx.req);
    let body: AuthConfig;
    try { body = JSON.parse(raw.toString() || '{}') as AuthConfig; } catch { throw new BadRequestError('invalid JSON body'); }
    const auth = normaliseAuth(body);
    if (!auth) throw new BadRequestError('username and password must be given');
    await registry(api).login(auth);
    sendJson(ctx.res, 200, { Status: 'Login Succeeded', IdentityToken: '' });
  });
}
