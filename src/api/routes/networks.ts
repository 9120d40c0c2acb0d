import { PREDEFINED } from '../../model/network.js';
import type { NetworkRecord } from '../../network/types.js';
import { ApiError, BadRequestError } from '../../util/errors.js';
import { networkInspect } from '../views/network.js';
import type { ApiContext } from '../context.js';
import { checkFilterKeys, labelsMatch, parseFilters, readJsonBody, readRequiredJsonBody, sendEmpty, sendJson } from '../http.js';
import type { Router } from '../router.js';
import { validateNetworkConnect, validateNetworkCreate, validateNetworkDisconnect } from '../validate/index.js';

export function networkRoutes(r: Router, api: ApiContext): void {
  const net = api.network;
  const inspect = (n: NetworkRecord) => networkInspect(n, api.engine.list(), n.Scope === 'swarm' ? net.swarm?.peersView(n) : undefined, {
    ...net.provided.inspectMembers(n.Id), ...(n.Scope === 'swarm' ? net.swarm?.sandboxMembers?.(n) : undefined),
  });
  const inUse = (networkId: string) => api.engine.list().some((c) => c.Endpoints?.[networkId]?.EndpointID);

  r.get('/networks', (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    checkFilterKeys(filters, ['name', 'id', 'driver', 'label', 'type', 'scope', 'dangling']);
    // Docker's words for a type that is neither (daemon/network/filter.go).
    for (const t of filters.get('type') ?? []) if (t !== 'custom' && t !== 'builtin') throw new BadRequestError(`invalid filter: 'type'='${t}'`);
    const f = (k: string) => filters.get(k);
    const list = net.registry.list().filter((n) => {
      if (f('name') && !f('name')!.some((v) => n.Name.includes(v))) return false;
      if (f('id') && !f('id')!.some((v) => n.Id.startsWith(v))) return false;
      if (f('driver') && !f('driver')!.includes(n.Driver)) return false;
      if (f('label') && !labelsMatch(n.Labels, f('label')!)) return false;
      if (f('scope') && !f('scope')!.includes(n.Scope)) return false;
      if (f('type')) {
        const type = PREDEFINED.includes(n.Name) ? 'builtin' : 'custom';
        if (!f('type')!.includes(type)) return false;
      }
      return true;
    });
    sendJson(ctx.res, 200, list.map(inspect));
  });
  r.get('/networks/{id}', (ctx) => {
    const ref = ctx.params.id!;
    // Docker words an ambiguous name differently here than everywhere else.
    const named = net.registry.networks.has(ref) ? [] : net.registry.named(ref);
    if (named.length > 1) throw new BadRequestError(`${named.length} matches found based on name: network ${ref} is ambiguous`);
    sendJson(ctx.res, 200, inspect(net.registry.get(ref)));
  });
  r.post('/networks/create', async (ctx) => {
    const body = await readRequiredJsonBody(ctx.req);
    validateNetworkCreate(body);
    const out = await net.create(body);
    api.engine.events.network('create', net.registry.get(out.Id));
    sendJson(ctx.res, 201, out);
  });
  r.delete('/networks/{id}', async (ctx) => {
    api.engine.events.network('destroy', await net.remove(ctx.params.id!, inUse));
    sendEmpty(ctx.res, 204);
  });
  r.post('/networks/{id}/connect', async (ctx) => {
    const body = await readJsonBody(ctx.req);
    validateNetworkConnect(body);
    await api.engine.connect(String(body.Container ?? ''), ctx.params.id!, (body.EndpointConfig ?? {}) as Record<string, unknown>);
    sendEmpty(ctx.res, 200);
  });
  r.post('/networks/{id}/disconnect', async (ctx) => {
    const body = await readJsonBody(ctx.req);
    validateNetworkDisconnect(body);
    await api.engine.disconnect(String(body.Container ?? ''), ctx.params.id!, !!body.Force);
    sendEmpty(ctx.res, 200);
  });
  r.post('/networks/prune', async (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    checkFilterKeys(filters, ['label', 'until']);
    const deleted: string[] = [];
    for (const n of net.registry.list()) {
      // As Docker's: the routing mesh's network goes only when a user removes it by name.
      if (PREDEFINED.includes(n.Name) || n.Ingress || !labelsMatch(n.Labels, filters.get('label') ?? [])) continue;
      if (inUse(n.Id)) continue;
      if (n.Scope === 'swarm') {
        // As Docker's cluster prune: only a manager removes swarm networks, and one in use on
        // another host is left, not an error of the whole prune.
        try { await net.remove(n.Id, inUse); } catch (e) { if (e instanceof ApiError) continue; throw e; }
      } else {
        await net.remove(n.Id, inUse);
      }
      api.engine.events.network('destroy', n);
      deleted.push(n.Name);
    }
    sendJson(ctx.res, 200, { NetworksDeleted: deleted.length ? deleted : null });
  });
}
