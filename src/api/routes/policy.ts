import { endpointPolicyView } from '../views/policy.js';
import type { ApiContext } from '../context.js';
import { sendJson } from '../http.js';
import type { Router } from '../router.js';

/**
 * berth's own routes (not Docker's, so under /berth/): the effective network policy of running
 * containers, as the kernel enforces it now, with the counters of its rules.
 */
export function policyRoutes(r: Router, api: ApiContext): void {
  const policy = api.network.policy;
  r.get('/berth/policy', async (ctx) => {
    const byContainer = new Map<string, ReturnType<typeof policy.all>>();
    for (const ep of policy.all()) byContainer.set(ep.containerId, [...(byContainer.get(ep.containerId) ?? []), ep]);
    const out = [];
    for (const [id, eps] of byContainer) {
      out.push({ Id: id, Name: eps[0]!.containerName, Endpoints: await Promise.all(eps.map((e) => endpointPolicyView(policy, e))) });
    }
    out.sort((a, b) => a.Name.localeCompare(b.Name));
    sendJson(ctx.res, 200, out);
  });
  r.get('/berth/policy/{id}', async (ctx) => {
    const c = api.engine.get(ctx.params.id!);
    const eps = policy.endpointsOf(c.Id);
    sendJson(ctx.res, 200, { Id: c.Id, Name: c.Name.slice(1), Running: c.State.Running, Endpoints: await Promise.all(eps.map((e) => endpointPolicyView(policy, e))) });
  });
}
