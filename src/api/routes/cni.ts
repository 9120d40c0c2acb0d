import type { ProvideRequest } from '../../network/cniprovider.js';
import { pluginOutcome, type BerthdCall } from '../../cni/plugin.js';
import { ApiError, BadRequestError, errorMessage, NotFoundError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { readBodyBuffer, readRequiredJsonBody, sendEmpty, sendJson } from '../http.js';
import type { Router } from '../router.js';

/**
 * berth's own routes for its CNI plugin, berth-cni (src/cni/plugin.ts): a CNI runtime's ADD, DEL,
 * CHECK, GC and STATUS on one of berth's networks. The plugin turns the runtime's environment and
 * configuration into these bodies and the answers into CNI results and errors, either in its own
 * process (bin/berth-cni-node) or here, for the native executable (`exec`).
 */
export function cniRoutes(r: Router, api: ApiContext): void {
  const provided = api.network.provided;
  for (const route of CNI_OPERATIONS) {
    r.post(`/berth/cni/${route}`, async (ctx) => {
      const out = await cniOperation(provided, route, await readRequiredJsonBody(ctx.req));
      if (out === undefined) sendEmpty(ctx.res, 204);
      else sendJson(ctx.res, 200, out);
    });
  }
  // The whole plugin call, run here for native/berth-cni.c: the configuration as the body, the
  // runtime's CNI_* variables as headers; the answer is what the plugin prints, and its exit status.
  r.post('/berth/cni/exec', async (ctx) => {
    const input = (await readBodyBuffer(ctx.req)).toString();
    const env: Record<string, string> = {};
    for (const name of CNI_VARIABLES) {
      const v = ctx.req.headers[name.toLowerCase().replace(/_/g, '-')];
      if (typeof v === 'string') env[name] = v;
    }
    const inProcess: BerthdCall = async (_socket, route, body) => {
      try {
        if (!(CNI_OPERATIONS as readonly string[]).includes(route)) throw new NotFoundError(`no CNI operation ${route}`);
        return { status: 200, json: await cniOperation(provided, route as CniOperation, (body ?? {}) as Record<string, unknown>) };
      } catch (e) {
        return { status: e instanceof ApiError ? e.status : 500, json: { message: errorMessage(e) } };
      }
    };
    const { stdout, exit } = await pluginOutcome(env.CNI_COMMAND ?? '', input, env, inProcess);
    const body = Buffer.from(stdout);
    ctx.res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': String(body.length), 'Cni-Exit': String(exit) });
    ctx.res.end(body);
  });
}

/** The variables a CNI runtime passes, as berth-cni.c sends them (CNI_COMMAND as `Cni-Command`). */
const CNI_VARIABLES = ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH'] as const;
const CNI_OPERATIONS = ['add', 'del', 'check', 'gc', 'status'] as const;
type CniOperation = typeof CNI_OPERATIONS[number];

/** One operation of berth-cni on berth's networks; its JSON answer, or undefined for none. */
async function cniOperation(provided: ApiContext['network']['provided'], route: CniOperation, b: Record<string, unknown>): Promise<unknown> {
  switch (route) {
    case 'add':
      return provided.add(attachment(b, true));
    case 'del':
      await provided.del(attachment(b, false));
      return undefined;
    case 'check':
      await provided.check(attachment(b, true));
      return undefined;
    case 'gc': {
      const valid = Array.isArray(b.valid) ? b.valid : [];
      if (valid.some((v) => !v || typeof v !== 'object' || typeof (v as Record<string, unknown>).containerID !== 'string' || typeof (v as Record<string, unknown>).ifname !== 'string')) {
        throw new BadRequestError('valid: a list of {containerID, ifname}');
      }
      return { Removed: await provided.gc(str(b, 'network'), typeof b.list === 'string' ? b.list : '', valid as Array<{ containerID: string; ifname: string }>) };
    }
    case 'status':
      provided.status(str(b, 'network'));
      return undefined;
  }
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
