import type { JoinBody, InitRequest } from '../../cluster/cluster.js';
import type { NodeFilters, NodeSpecBody } from '../../cluster/control.js';
import { NO_MANAGER, NO_SWARM, UnavailableError } from '../../cluster/errors.js';
import type { Spec } from '../../cluster/keys.js';
import { ApiError, BadRequestError, ConflictError, NotFoundError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { boolParam, checkFilterKeys, parseFilters, readBodyBuffer, sendEmpty, sendJson } from '../http.js';
import type { RequestContext, Router } from '../router.js';
import { serviceLogsRoute } from './servicelogs.js';

/**
 * Every swarm endpoint of API v1.41 (/swarm, /nodes, /services, /tasks, /secrets, /configs).
 * /swarm and /nodes are served by the cluster (src/cluster) when this node is in one; everything
 * else, and everything on a node in no cluster, answers as Docker 20.10 does on a node that is not
 * part of a swarm: 503 with daemon/cluster's words, after the same request checks Docker makes first
 * (a body must be JSON, a version must be a number), so a malformed request still gets its 400.
 * Clients rely on this: the Python SDK's and Ansible's cleanup calls `POST /swarm/leave` and
 * treats 503 "not part of a swarm" as done; `docker info`-style probes read GET /swarm's 503.
 */

/** Docker decodes the body with json.Decoder before it asks the cluster anything. */
async function decodeBody(ctx: RequestContext): Promise<unknown> {
  const raw = (await readBodyBuffer(ctx.req)).toString('utf8');
  if (raw.trim() === '') throw new BadRequestError('got EOF while reading request body');
  try { return JSON.parse(raw); } catch (e) { throw new BadRequestError(`invalid JSON body: ${(e as Error).message}`); }
}

/** strconv.ParseUint(version) as the update routes do it, with their words. */
function checkVersion(ctx: RequestContext, kind: 'swarm' | 'service' | 'node' | 'secret' | 'config'): number {
  const raw = ctx.query.get('version') ?? '';
  if (/^\d+$/.test(raw) && BigInt(raw) < 1n << 64n) return Number(raw);
  // secret and config say less (cluster_routes.go).
  if (kind === 'secret' || kind === 'config') throw new BadRequestError(`invalid ${kind} version`);
  throw new BadRequestError(`invalid ${kind} version '${raw}': strconv.ParseUint: parsing "${raw}": invalid syntax`);
}

export function swarmRoutes(r: Router, api: ApiContext): void {
  const noManager = (): never => { throw new UnavailableError(NO_MANAGER); };
  const list = (ctx: RequestContext): never => {
    parseFilters(ctx.query.get('filters'));
    return noManager();
  };
  const logs = (ctx: RequestContext): never => {
    if (!boolParam(ctx.query.get('stdout')) && !boolParam(ctx.query.get('stderr'))) {
      throw new BadRequestError('Bad parameters: you must choose at least one stream');
    }
    return noManager();
  };
  const cluster = () => api.cluster;
  const control = () => api.cluster?.control;

  r.get('/swarm', async (ctx) => sendJson(ctx.res, 200, await (control() ?? { inspect: noManager }).inspect()));
  r.post('/swarm/init', async (ctx) => {
    const body = (await decodeBody(ctx)) as InitRequest;
    const c = cluster();
    if (!c) throw new UnavailableError('berth does not run swarm mode here: this daemon has no cluster support');
    sendJson(ctx.res, 200, await c.init(body ?? {}));
  });
  r.post('/swarm/join', async (ctx) => {
    const body = (await decodeBody(ctx)) as JoinBody;
    const c = cluster();
    if (!c) throw new UnavailableError('berth does not run swarm mode here: this daemon has no cluster support');
    await c.join(body ?? {});
    sendEmpty(ctx.res, 200);
  });
  r.post('/swarm/leave', async (ctx) => {
    const c = cluster();
    if (!c) throw new UnavailableError(NO_SWARM);
    await c.leave(boolParam(ctx.query.get('force')));
    sendEmpty(ctx.res, 200);
  });
  r.get('/swarm/unlockkey', (ctx) => sendJson(ctx.res, 200, (control() ?? { unlockKey: noManager }).unlockKey()));
  r.post('/swarm/update', async (ctx) => {
    const spec = (await decodeBody(ctx)) as Spec;
    const version = checkVersion(ctx, 'swarm');
    const c = control();
    if (!c) return noManager();
    await c.update(version, spec ?? {}, { worker: boolParam(ctx.query.get('rotateWorkerToken')), manager: boolParam(ctx.query.get('rotateManagerToken')) });
    sendEmpty(ctx.res, 200);
  });
  r.post('/swarm/unlock', async (ctx) => {
    await decodeBody(ctx);
    // Docker's answer to an unlock on a swarm that is not locked; berth never locks one.
    if (cluster()?.current) throw new ConflictError('swarm is not locked');
    return noManager();
  });

  // Services and tasks: a manager's (ServiceControl refuses on workers and outside a swarm).
  const services = () => (cluster()?.current ? cluster()!.services : undefined);
  const filterMap = (ctx: RequestContext, keys: string[]) => {
    const f = parseFilters(ctx.query.get('filters'));
    checkFilterKeys(f, keys);
    return Object.fromEntries(f) as Record<string, string[]>;
  };
  r.get('/services', async (ctx) => {
    const s = services();
    if (!s) return list(ctx);
    const f = filterMap(ctx, ['id', 'label', 'mode', 'name']);
    sendJson(ctx.res, 200, await s.list(f, boolParam(ctx.query.get('status'))));
  });
  r.post('/services/create', async (ctx) => {
    const body = await decodeBody(ctx);
    const s = services();
    if (!s) return noManager();
    sendJson(ctx.res, 201, await s.create(body));
  });
  r.get('/services/{id}', async (ctx) => sendJson(ctx.res, 200, await (services() ?? { inspect: noManager }).inspect(ctx.params.id!)));
  r.post('/services/{id}/update', async (ctx) => {
    const body = await decodeBody(ctx);
    const version = checkVersion(ctx, 'service');
    const s = services();
    if (!s) return noManager();
    sendJson(ctx.res, 200, await s.update(ctx.params.id!, version, body, ctx.query.get('rollback') === 'previous'));
  });
  r.delete('/services/{id}', async (ctx) => {
    const s = services();
    if (!s) return noManager();
    await s.remove(ctx.params.id!);
    sendEmpty(ctx.res, 200);
  });
  r.get('/services/{id}/logs', (ctx) => { const s = services(); return s ? serviceLogsRoute(s, 'service', ctx) : logs(ctx); });

  r.get('/nodes', async (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    const c = control();
    if (!c) return noManager();
    checkFilterKeys(filters, ['id', 'label', 'name', 'node.label', 'membership', 'role']);
    sendJson(ctx.res, 200, await c.listNodes(Object.fromEntries(filters) as NodeFilters));
  });
  r.get('/nodes/{id}', async (ctx) => sendJson(ctx.res, 200, await (control() ?? { getNode: noManager }).getNode(ctx.params.id!)));
  r.delete('/nodes/{id}', async (ctx) => {
    const c = control();
    if (!c) return noManager();
    await c.removeNode(ctx.params.id!, boolParam(ctx.query.get('force')));
    sendEmpty(ctx.res, 200);
  });
  r.post('/nodes/{id}/update', async (ctx) => {
    const spec = (await decodeBody(ctx)) as NodeSpecBody;
    const version = checkVersion(ctx, 'node');
    const c = control();
    if (!c) return noManager();
    await c.updateNode(ctx.params.id!, version, spec ?? {});
    sendEmpty(ctx.res, 200);
  });

  r.get('/tasks', async (ctx) => {
    const s = services();
    if (!s) return list(ctx);
    sendJson(ctx.res, 200, await s.tasks(filterMap(ctx, ['id', 'name', 'service', 'node', 'label', 'desired-state', '_up-to-date'])));
  });
  r.get('/tasks/{id}', async (ctx) => sendJson(ctx.res, 200, await (services() ?? { task: noManager }).task(ctx.params.id!)));
  r.get('/tasks/{id}/logs', (ctx) => { const s = services(); return s ? serviceLogsRoute(s, 'task', ctx) : logs(ctx); });

  // berth keeps no secrets or configs yet. A manager lists none and finds none, so what only reads
  // them works (`docker stack rm` and `stack deploy` list them); making one is refused in words
  // that name the gap (a stack file that needs one fails there, nothing of it made yet).
  const managerOrNot = (): boolean => {
    const s = services();
    if (!s) return false;
    s.assertManager();
    return true;
  };
  for (const kind of ['secret', 'config'] as const) {
    const notFound = (ctx: RequestContext): never => { throw new NotFoundError(`${kind} ${ctx.params.id} not found`); };
    r.get(`/${kind}s`, (ctx) => {
      if (!managerOrNot()) return list(ctx);
      filterMap(ctx, ['id', 'label', 'name', 'names']);
      sendJson(ctx.res, 200, []);
    });
    r.post(`/${kind}s/create`, async (ctx) => {
      await decodeBody(ctx);
      if (!managerOrNot()) return noManager();
      throw new ApiError(501, `berth does not keep swarm ${kind}s yet: a service or stack that needs a ${kind} cannot be deployed on berth`);
    });
    r.get(`/${kind}s/{id}`, (ctx) => (managerOrNot() ? notFound(ctx) : noManager()));
    r.delete(`/${kind}s/{id}`, (ctx) => (managerOrNot() ? notFound(ctx) : noManager()));
    r.post(`/${kind}s/{id}/update`, async (ctx) => {
      await decodeBody(ctx);
      checkVersion(ctx, kind);
      return managerOrNot() ? notFound(ctx) : noManager();
    });
  }
}
