import type { ApiContext } from '../context.js';
import type { Router } from '../router.js';
import { CONTENT_TYPE } from '../../metrics/exposition.js';
import { NotFoundError } from '../../util/errors.js';

/** GET /metrics: Prometheus' text format, on the API socket (and on --metrics-addr, metricsserver.ts). */
export function metricsRoutes(r: Router, api: ApiContext): void {
  r.get('/metrics', async (ctx) => {
    if (!api.metrics) throw new NotFoundError('page not found');
    const body = await api.metrics();
    ctx.res.writeHead(200, { 'Content-Type': CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) });
    ctx.res.end(ctx.req.method === 'HEAD' ? undefined : body);
  });
}
