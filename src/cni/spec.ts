/**
 * The CNI specification's wire types (containernetworking/cni SPEC.md, 0.3.0 to 1.1.0) and the
 * pure checks on them: configuration lists, version negotiation, results, errors. Nothing here
 * runs a plugin; runner.ts and the berth-cni plugin both build on it.
 */

/** The spec versions berth speaks, oldest first. Older ones have another result shape (ip4/ip6 objects). */
export const SPEC_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

/** The spec's well-known error codes (SPEC.md "Error"), for messages people can act on. */
export const ERROR_CODES: Record<number, string> = {
  1: 'incompatible CNI version', 2: 'unsupported field in network configuration', 3: 'container unknown or does not exist',
  4: 'invalid necessary environment variables', 5: 'I/O failure', 6: 'failed to decode content', 7: 'invalid network configuration',
  11: 'try again later', 50: 'the plugin is not available', 51: 'the plugin is not available, and existing containers may be disrupted',
};

/** One plugin's configuration in a list: `type` names the executable, the rest is the plugin's. */
export interface PluginConf { type: string; capabilities?: Record<string, boolean>; [k: string]: unknown }

export interface ConfList {
  cniVersion: string;
  /** 1.1.0: every version this configuration works with; the runtime picks the highest it can. */
  cniVersions?: string[];
  name: string;
  disableCheck?: boolean;
  disableGC?: boolean;
  plugins: PluginConf[];
}

export interface CniInterface { name: string; mac?: string; mtu?: number; sandbox?: string }
export interface CniIp { address: string; gateway?: string; interface?: number; version?: string }
export interface CniRoute { dst: string; gw?: string; mtu?: number; priority?: number; table?: number; scope?: number }
export interface CniDns { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] }
export interface CniResult { cniVersion: string; interfaces?: CniInterface[]; ips?: CniIp[]; routes?: CniRoute[]; dns?: CniDns }

/** A plugin's error answer (SPEC.md "Error"), and the error berth raises from it. */
export interface CniErrorBody { cniVersion?: string; code: number; msg: string; details?: string }

export class CniError extends Error {
  constructor(readonly code: number, msg: string, readonly details?: string) {
    super(msg);
  }

  /** The answer a plugin prints on stdout. */
  body(version: string): CniErrorBody {
    return { cniVersion: version, code: this.code, msg: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
/** A plugin type is a file name in the plugin directory: never a path. */
const PLUGIN_TYPE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** Compares two versions of the form a.b.c. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

export function atLeast(version: string, min: string): boolean {
  return compareVersions(version, min) >= 0;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

/**
 * A configuration list from its file's text. A single plugin's configuration (a .conf file, as
 * before spec 1.0.0) becomes a list of one, as libcni reads it. Throws CniError 7 naming `source`.
 */
export function parseConfList(text: string, source: string): ConfList {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CniError(6, `${source}: not JSON: ${(e as Error).message}`);
  }
  if (!isObject(raw)) throw new CniError(7, `${source}: a CNI configuration is a JSON object`);
  if (!Array.isArray(raw.plugins) && typeof raw.type === 'string') {
    const { name, cniVersion, ...plugin } = raw;
    raw = { name, cniVersion, plugins: [plugin] };
  }
  const c = raw as Record<string, unknown>;
  if (typeof c.name !== 'string' || !NETWORK_NAME.test(c.name)) throw new CniError(7, `${source}: "name" must be letters, digits, _ . - (got ${JSON.stringify(c.name)})`);
  if (typeof c.cniVersion !== 'string') throw new CniError(7, `${source}: "cniVersion" is missing`);
  if (c.cniVersions !== undefined && (!Array.isArray(c.cniVersions) || c.cniVersions.some((v) => typeof v !== 'string'))) {
    throw new CniError(7, `${source}: "cniVersions" must be a list of versions`);
  }
  if (!Array.isArray(c.plugins) || c.plugins.length === 0) throw new CniError(7, `${source}: "plugins" must list at least one plugin`);
  for (const [i, p] of c.plugins.entries()) {
    if (!isObject(p) || typeof p.type !== 'string' || !PLUGIN_TYPE.test(p.type)) {
      throw new CniError(7, `${source}: plugin ${i + 1} has no usable "type" (a file name in the plugin directory)`);
    }
    if (p.capabilities !== undefined && !isObject(p.capabilities)) throw new CniError(7, `${source}: plugin ${p.type}: "capabilities" must be an object`);
  }
  for (const k of ['disableCheck', 'disableGC'] as const) {
    if (c[k] !== undefined && typeof c[k] !== 'boolean') throw new CniError(7, `${source}: "${k}" must be true or false`);
  }
  return c as unknown as ConfList;
}

/**
 * The version a list runs at. Without `cniVersions` it is `cniVersion`, which berth and every
 * plugin must speak. With it (1.1.0), the highest listed version berth and every plugin speak:
 * a list that allows 1.0.0 and 1.1.0 still runs on plugins that stop at 1.0.0. A plugin that
 * cannot is named in the error (code 1, as the spec's incompatible version).
 */
export function negotiateVersion(c: ConfList, supported: Map<string, string[]>): string {
  const berth = new Set<string>(SPEC_VERSIONS);
  const speaks = (v: string) => [...supported.values()].every((list) => list.includes(v));
  if (c.cniVersions?.length) {
    const usable = c.cniVersions.filter((v) => berth.has(v) && speaks(v)).sort(compareVersions);
    const best = usable[usable.length - 1];
    if (best) return best;
  }
  const v = c.cniVersion;
  if (!berth.has(v)) throw new CniError(1, `CNI version ${v} of configuration ${c.name} is not one berth speaks (${SPEC_VERSIONS.join(', ')})`);
  for (const [type, list] of supported) {
    if (!list.includes(v)) throw new CniError(1, `plugin ${type} does not speak CNI version ${v} of configuration ${c.name} (it speaks ${list.join(', ') || 'none'})`);
  }
  return v;
}

/** A VERSION answer's list; a plugin too old to answer VERSION speaks 0.1.0 and 0.2.0 (libcni's assumption). */
export function parseVersionAnswer(out: string): string[] {
  try {
    const v = JSON.parse(out) as { supportedVersions?: unknown };
    if (Array.isArray(v.supportedVersions) && v.supportedVersions.every((x) => typeof x === 'string')) return v.supportedVersions as string[];
  } catch { /* below */ }
  throw new CniError(6, `VERSION answer is not a CNI version result: ${out.slice(0, 200)}`);
}

/**
 * A plugin's ADD result: checked enough that berth can use it (addresses in CIDR form, interface
 * indexes in range). The result is kept as the plugin gave it, for the next plugin and for DEL.
 */
export function parseResult(out: string, plugin: string): CniResult {
  let r: unknown;
  try {
    r = JSON.parse(out);
  } catch {
    throw new CniError(6, `plugin ${plugin} answered ADD with no JSON result: ${out.slice(0, 200)}`);
  }
  if (!isObject(r) || typeof r.cniVersion !== 'string') throw new CniError(6, `plugin ${plugin} answered ADD without a cniVersion`);
  if (!atLeast(r.cniVersion, '0.3.0')) throw new CniError(1, `plugin ${plugin} answered with a CNI ${r.cniVersion} result: berth reads 0.3.0 and later`);
  const res = r as unknown as CniResult;
  const ifaces = Array.isArray(res.interfaces) ? res.interfaces : [];
  for (const ip of Array.isArray(res.ips) ? res.ips : []) {
    if (!isObject(ip) || typeof ip.address !== 'string' || !/^[0-9a-fA-F.:]+\/\d+$/.test(ip.address)) throw new CniError(6, `plugin ${plugin}: result address ${JSON.stringify(ip)} is not in CIDR form`);
    if (ip.interface !== undefined && (!Number.isInteger(ip.interface) || ip.interface < 0 || ip.interface >= ifaces.length)) {
      throw new CniError(6, `plugin ${plugin}: result address ${ip.address} names interface ${ip.interface}, which the result does not have`);
    }
  }
  return res;
}

/** What an endpoint takes from a result: the addresses on the container's interface, its MAC. */
export interface EndpointAddresses { ip?: string; prefix?: number; gateway?: string; ip6?: string; prefix6?: number; gateway6?: string; mac?: string }

/** The container's addresses in a result: those on the interface of `ifname` in `netns`, else those naming no interface. */
export function endpointAddresses(r: CniResult, ifname: string, netns: string): EndpointAddresses {
  const ifaces = r.interfaces ?? [];
  const mine = ifaces.findIndex((i) => i.name === ifname && (!i.sandbox || i.sandbox === netns));
  const ips = (r.ips ?? []).filter((ip) => (mine >= 0 ? ip.interface === mine || ip.interface === undefined : true));
  const out: EndpointAddresses = {};
  if (mine >= 0 && ifaces[mine]!.mac) out.mac = ifaces[mine]!.mac!.toLowerCase();
  const v4 = ips.find((ip) => !ip.address.includes(':'));
  const v6 = ips.find((ip) => ip.address.includes(':'));
  if (v4) {
    const [a, p] = v4.address.split('/');
    Object.assign(out, { ip: a, prefix: Number(p), gateway: v4.gateway ?? '' });
  }
  if (v6) {
    const [a, p] = v6.address.split('/');
    Object.assign(out, { ip6: a, prefix6: Number(p), gateway6: v6.gateway ?? '' });
  }
  return out;
}

/**
 * One plugin's stdin in a list: its own configuration with the list's name and version, the
 * runtime's values for the capabilities it declares (and only those: SPEC.md "Deriving
 * runtimeConfig"), and the previous result where the operation carries one.
 */
export function pluginInput(list: ConfList, p: PluginConf, version: string, runtime: Record<string, unknown>, prevResult?: CniResult, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const { runtimeConfig: _ignored, ...own } = p;
  const caps = Object.entries(p.capabilities ?? {}).filter(([k, on]) => on && runtime[k] !== undefined);
  return {
    ...own, ...extra, name: list.name, cniVersion: version,
    ...(caps.length ? { runtimeConfig: Object.fromEntries(caps.map(([k]) => [k, runtime[k]])) } : {}),
    ...(prevResult ? { prevResult } : {}),
  };
}

/** A plugin's error output as a message: the spec's code, its meaning and the plugin's words. */
export function describeFailure(plugin: string, command: string, exitCode: number | null, stdout: string, stderr: string): CniError {
  let body: Partial<CniErrorBody> | undefined;
  try {
    const b = JSON.parse(stdout) as unknown;
    if (isObject(b) && typeof b.code === 'number') body = b as Partial<CniErrorBody>;
  } catch { /* not a spec error */ }
  if (body) {
    const meaning = ERROR_CODES[body.code!];
    const details = body.details ? ` (${body.details})` : '';
    return new CniError(body.code!, `CNI plugin ${plugin} failed ${command}: error ${body.code}${meaning ? ` (${meaning})` : ''}: ${body.msg ?? ''}${details}`, body.details);
  }
  const said = (stderr.trim() || stdout.trim()).split('\n').slice(-3).join(' ');
  return new CniError(999, `CNI plugin ${plugin} failed ${command}: exit status ${exitCode ?? 'killed'}${said ? `: ${said}` : ''}`);
}

/** CNI_ARGS: K=V pairs joined by ';', values without ';' or '='. */
export function formatArgs(args: Record<string, string>): string {
  return Object.entries(args).filter(([k, v]) => /^[A-Za-z0-9_]+$/.test(k) && !/[;=]/.test(v)).map(([k, v]) => `${k}=${v}`).join(';');
}

export function parseArgs(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (s ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}
