import { NotFoundError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { sendJson } from '../http.js';
import type { Router } from '../router.js';

export function networkRoutes(r: Router, api: ApiContext): void {
  const net = api.engine.network;
  const inspect = (n: { Name: string; Id: string; Driver: string; Scope: string }) => {
    const containers: Record<string, object> = {};
    for (const c of api.engine.list()) {
      if (c.State.Running && net.networkName(c) === n.Name) {
        containers[c.Id] = { Name: c.Name.slice(1), EndpointID: '', MacAddress: '', IPv4Address: '', IPv6Address: '' };
      }
    }
    return {
      Name: n.Name, Id: n.Id, Created: api.info.startedAt.toISOString(), Scope: n.Scope, Driver: n.Driver,
      EnableIPv6: false, IPAM: { Driver: 'default', Options: null, Config: [] }, Internal: false, Attachable: false,
      Ingress: false, ConfigFrom: { Network: '' }, ConfigOnly: false, Containers: containers, Options: {}, Labels: {},
    };
  };
  const find = (ref: string) => {
    const n = net.predefined.find((x) => x.Name === ref || x.Id === ref || (ref.length >= 3 && x.Id.startsWith(ref)));
    if (!n) throw new NotFoundError(`network ${ref} not found`);
    return n;
  };
  r.get('/networks', (ctx) => sendJson(ctx.res, 200, net.predefined.map(inspect)));
  r.get('/networks/{id}', (ctx) => sendJson(ctx.res, 200, inspect(find(ctx.params.id!))));
  r.post('/networks/prune', (ctx) => sendJson(ctx.res, 200, { NetworksDeleted: null }));
}
