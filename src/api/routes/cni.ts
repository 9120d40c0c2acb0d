import type { ProvideRequest } from '../../network/cniprovider.js';
import { BadRequestError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { readRequiredJsonBody, sendEmpty, sendJson } from '../http.js';
import type { Router } from '../router.js';

/**
 * berth's own routes for its CNI plugin, berth-cni (src/cni/plugin.ts): a CNI runtime's ADD, DEL,
 * CHECK, GC and STATUS on one of berth's networks. The plugin turns the runtime's environment and
 * configuration into these bodies and the answers into CNI results and errors.
 */
export function cniRoutes(r: Router, api: ApiContext): void {
  const provided = api.network.provided;
  r.post('/berth/cni/add', async (ctx) => {
    sendJson(ctx.res, 200, await provided.add(attachment(await readRequiredJsonBody(ctx.req), true)));
  });
  r.post('/berth/cni/del', async (ctx) => {
    const a = attachment(await readRequiredJsonBody(ctx.req), false);
    await provided.del(a);
    sendEmpty(ctx.res, 204);
  });
  r.post('/berth/cni/check', async (ctx) => {
    await provided.check(attachment(await readRequiredJsonBody(ctx.req), true));
    sendEmpty(ctx.res, 204);
  });
  r.post('/berth/cni/gc', async (ctx) => {
    const b = await readRequiredJsonBody(ctx.req);
    const valid = Array.isArray(b.valid) ? b.valid : [];
    if (valid.some((v) => !v || typeof v !== 'object' || typeof (v as Record<string, unknown>).containerID !== 'string' || typeof (v as Record<string, unknown>).ifname !== 'string')) {
      throw new BadRequestError('valid: a list of {containerID, ifname}');
    }
    sendJson(ctx.res, 200, { Removed: await provided.gc(str(b, 'network'), typeof b.list === 'string' ? b.list : '', valid as Array<{ containerID: string; ifname: string }>) });
  });
  r.post('/berth/cni/status', async (ctx) => {
    provided.status(str(await readRequiredJsonBody(ctx.req), 'network'));
    sendEmpty(ctx.res, 204);
  });
}

function str(b: Record<string, unknown>, k: string, required = true): string {
  const v = b[k];
  if (v === undefined && !required) return '';
  if (typeof v !== 'string' || (required && !v)) throw new BadRequestError(`${k} must be a non-empty string`);
  return v;
}

function attachment(b: Record<string, unknown>, netnsRequired: boolean): ProvideRequest {
  const aliases = b.aliases === undefined ? [] : b.aliases;
  if (!Array.isArray(aliases) || aliases.some((a) => typeof a !== 'string')) throw new BadRequestError('aliases must be a list of strings');
  const ifname = str(b, 'ifname');
  if (!/^[a-zA-Z0-9_.-]{1,15}$/.test(ifname)) throw new BadRequestError(`ifname ${ifname} is no interface name`);
  return {
    network: str(b, 'network'), containerId: str(b, 'containerId'), netns: str(b, 'netns', netnsRequired), ifname,
    ...(typeof b.name === 'string' && b.name ? { name: b.name } : {}), aliases: aliases as string[],
    ...(typeof b.list === 'string' ? { list: b.list } : {}),
  };
}
