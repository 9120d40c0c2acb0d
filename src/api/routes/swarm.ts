import { ApiError, BadRequestError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { boolParam, parseFilters, readBodyBuffer } from '../http.js';
import type { RequestContext, Router } from '../router.js';

/**
 * Every swarm endpoint of API v1.41 (/swarm, /nodes, /services, /tasks, /secrets, /configs),
 * answered as Docker 20.10 answers them on a node that is not part of a swarm, which berth always
 * is: 503 with daemon/cluster's words, after the same request checks Docker makes first (a body
 * must be JSON, a version must be a number), so a malformed request still gets its 400.
 * Clients rely on this: the Python SDK's and Ansible's cleanup calls `POST /swarm/leave` and
 * treats 503 "not part of a swarm" as done; `docker info`-style probes read GET /swarm's 503.
 */

// daemon/cluster/errors.go errNoSwarm: only leave (and, in Docker, an unlock of no swarm) say this.
const NO_SWARM = 'This node is not part of a swarm';
// daemon/cluster/cluster.go errNoManager, for a node with no swarm at all.
const NO_MANAGER = 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.';

class UnavailableError extends ApiError {
  constructor(message: string) { super(503, message); }
}

/** Docker decodes the body with json.Decoder before it asks the cluster anything. */
async function decodeBody(ctx: RequestContext): Promise<void> {
  const raw = (await readBodyBuffer(ctx.req)).toString('utf8');
  if (raw.trim() === '') throw new BadRequestError('got EOF while reading request body');
  try { JSON.parse(raw); } catch (e) { throw new BadRequestError(`invalid JSON body: ${(e as Error).message}`); }
}

/** strconv.ParseUint(version) as the update routes do it, with their words. */
function checkVersion(ctx: RequestContext, kind: 'swarm' | 'service' | 'node' | 'secret' | 'config'): void {
  const raw = ctx.query.get('version') ?? '';
  if (/^\d+$/.test(raw) && BigInt(raw) < 1n << 64n) return;
  // secret and config say less (cluster_routes.go).
  if (kind === 'secret' || kind === 'config') throw new BadRequestError(`invalid ${kind} version`);
  throw new BadRequestError(`invalid ${kind} version '${raw}': strconv.ParseUint: parsing "${raw}": invalid syntax`);
}

export function swarmRoutes(r: Router, _api: ApiContext): void {
  const noManager = (): never => { throw new UnavailableError(NO_MANAGER); };
  const list = (ctx: RequestContext): never => {
    parseFilters(ctx.query.get('filters'));
    return noManager();
  };
  const withBody = (kind?: Parameters<typeof checkVersion>[1]) => async (ctx: RequestContext): Promise<never> => {
    await decodeBody(ctx);
    if (kind) checkVersion(ctx, kind);
    return noManager();
  };
  const logs = (ctx: RequestContext): never => {
    if (!boolParam(ctx.query.get('stdout')) && !boolParam(ctx.query.get('stderr'))) {
      throw new BadRequestError('Bad parameters: you must choose at least one stream');
    }
    return noManager();
  };

  r.get('/swarm', noManager);
  // Docker would create or join a swarm here; berth has no swarm mode, so it says so plainly
  // rather than pretend, after the same body check.
  const noSwarmMode = async (ctx: RequestContext): Promise<never> => {
    await decodeBody(ctx);
    throw new UnavailableError('berth does not run swarm mode: this node cannot create or join a swarm');
  };
  r.post('/swarm/init', noSwarmMode);
  r.post('/swarm/join', noSwarmMode);
  r.post('/swarm/leave', () => { throw new UnavailableError(NO_SWARM); });
  r.get('/swarm/unlockkey', noManager);
  r.post('/swarm/update', withBody('swarm'));
  r.post('/swarm/unlock', withBody());

  r.get('/services', list);
  r.post('/services/create', withBody());
  r.get('/services/{id}', noManager);
  r.post('/services/{id}/update', withBody('service'));
  r.delete('/services/{id}', noManager);
  r.get('/services/{id}/logs', logs);

  r.get('/nodes', list);
  r.get('/nodes/{id}', noManager);
  r.delete('/nodes/{id}', noManager);
  r.post('/nodes/{id}/update', withBody('node'));

  r.get('/tasks', list);
  r.get('/tasks/{id}', noManager);
  r.get('/tasks/{id}/logs', logs);

  for (const kind of ['secret', 'config'] as const) {
    r.get(`/${kind}s`, list);
    r.post(`/${kind}s/create`, withBody());
    r.get(`/${kind}s/{id}`, noManager);
    r.delete(`/${kind}s/{id}`, noManager);
    r.post(`/${kind}s/{id}/update`, withBody(kind));
  }
}
