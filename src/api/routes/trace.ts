import type { ApiContext } from '../context.js';
import { readJsonBody, sendJson } from '../http.js';
import type { Router } from '../router.js';
import { BadRequestError } from '../../util/errors.js';

/**
 * berth's own route (not Docker's): `network trace`, the path of a packet from a container to a
 * target as berth's model explains it, proven by a probe with nftables tracing. The answer is 200
 * whatever the verdict: a blocked path is a result, not an error.
 */
export function traceRoutes(r: Router, api: ApiContext): void {
  r.post('/berth/network/trace', async (ctx) => {
    if (!api.tracer) throw new BadRequestError('this daemon does not trace');
    const body = await readJsonBody(ctx.req);
    const { From, To, Probe } = body as { From?: unknown; To?: unknown; Probe?: unknown };
    if (typeof From !== 'string' || !From) throw new BadRequestError('From: a container name or id is required');
    if (typeof To !== 'string' || !To) throw new BadRequestError('To: a target B[:PORT[/PROTO]] is required');
    if (Probe !== undefined && typeof Probe !== 'boolean') throw new BadRequestError('Probe: must be a boolean');
    sendJson(ctx.res, 200, await api.tracer.trace(From, To, { probe: Probe !== false }));
  });
}
