import { request } from 'node:http';
import { DEFAULT_SOCKET } from '../daemon/paths.js';
import { atLeast, CniError, parseArgs, SPEC_VERSIONS, type CniResult } from './spec.js';

/**
 * berth-cni, the CNI plugin berth provides (spec 0.3.0 to 1.1.0: ADD, DEL, CHECK, GC, STATUS,
 * VERSION): any CNI runtime puts its containers on berth's networks with it. It keeps nothing
 * itself; every call is one request to berthd's /berth/cni routes over berthd's socket. The
 * executable a runtime starts is native/berth-cni.c, which hands its input to berthd, where
 * runPlugin runs (POST /berth/cni/exec); this Node form (bin/berth-cni-node) is what it falls back
 * to when berthd does not answer, so VERSION and the CNI errors come out the same.
 *
 * Its configuration: `network` (berth network name or id; default: the list's name) and `socket`
 * (berthd's API socket; default /run/berth/berth.sock). The container's name for berth's DNS is
 * K8S_POD_NAME of CNI_ARGS, as podman and Kubernetes pass it; aliases come through the `aliases`
 * capability (podman's: network name to aliases).
 */

interface Conf { cniVersion?: string; name?: string; network?: string; socket?: string; runtimeConfig?: { aliases?: Record<string, string[]> }; [k: string]: unknown }

/** One request to berthd's /berth/cni routes: its status and JSON answer. */
export type BerthdCall = (socket: string, route: string, body: unknown) => Promise<{ status: number; json: any }>;

const overSocket: BerthdCall = (socket, route, body) => {
  const path = `/berth/cni/${route}`;
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = request({ socketPath: socket, method: 'POST', path, headers: { 'Content-Type': 'application/json', 'Content-Length': String(data.length) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json: unknown;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, json });
      });
      res.on('error', reject);
    });
    req.on('error', (e: NodeJS.ErrnoException) => reject(new CniError(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? 11 : 5, `berthd at ${socket} does not answer: ${e.message}`)));
    req.end(data);
  });
};

/** One route; berthd's refusals become CNI errors (a bad request or unknown network: invalid configuration). */
async function berthd(call: BerthdCall, conf: Conf, route: string, body: unknown, notFoundCode = 7): Promise<unknown> {
  const socket = conf.socket ?? DEFAULT_SOCKET;
  const r = await call(socket, route, body);
  if (r.status >= 200 && r.status < 300) return r.json;
  const msg = `berthd: ${r.json?.message ?? `status ${r.status}`}`;
  throw new CniError(r.status === 404 ? notFoundCode : r.status === 400 ? 7 : 999, msg);
}

type Env = Record<string, string | undefined>;

function required(env: Env, name: string): string {
  const v = env[name];
  if (!v) throw new CniError(4, `${name} is not set`);
  return v;
}

/** A result in the shape of the version asked for: before 1.0.0 every address names its family. */
export function resultFor(version: string, r: CniResult): CniResult {
  const out: CniResult = { ...r, cniVersion: version };
  if (!atLeast(version, '1.0.0')) out.ips = (r.ips ?? []).map((ip) => ({ ...ip, version: ip.address.includes(':') ? '6' : '4' }));
  return out;
}

/** One plugin call: the runtime's command, configuration (stdin) and CNI_* variables in, stdout out. */
export async function runPlugin(command: string, input: string, envIn: Env = process.env, call: BerthdCall = overSocket): Promise<string> {
  const env = (name: string) => required(envIn, name);
  let conf: Conf;
  try {
    conf = JSON.parse(input || '{}') as Conf;
  } catch (e) {
    throw new CniError(6, `configuration on stdin is not JSON: ${(e as Error).message}`);
  }
  const version = conf.cniVersion ?? '0.1.0';
  if (command === 'VERSION') return JSON.stringify({ cniVersion: atLeast(version, '0.3.0') ? version : '1.1.0', supportedVersions: SPEC_VERSIONS });
  if (!(SPEC_VERSIONS as readonly string[]).includes(version)) throw new CniError(1, `berth-cni speaks CNI ${SPEC_VERSIONS.join(', ')}, not ${version}`);
  const network = conf.network ?? conf.name;
  if (!network) throw new CniError(7, 'berth-cni needs "network" (a berth network) or the list\'s "name"');
  switch (command) {
    case 'ADD': {
      const args = parseArgs(envIn.CNI_ARGS);
      const aliases = conf.runtimeConfig?.aliases?.[conf.name ?? ''] ?? [];
      const r = await berthd(call, conf, 'add', {
        network, containerId: env('CNI_CONTAINERID'), netns: env('CNI_NETNS'), ifname: env('CNI_IFNAME'),
        ...(args.K8S_POD_NAME ? { name: args.K8S_POD_NAME } : {}), aliases, list: conf.name ?? '',
      });
      return JSON.stringify(resultFor(version, r as CniResult));
    }
    case 'DEL':
      // Idempotent, and possible after the namespace is gone (CNI_NETNS empty).
      await berthd(call, conf, 'del', { network, containerId: env('CNI_CONTAINERID'), netns: envIn.CNI_NETNS ?? '', ifname: env('CNI_IFNAME') });
      return '';
    case 'CHECK':
      await berthd(call, conf, 'check', { network, containerId: env('CNI_CONTAINERID'), netns: env('CNI_NETNS'), ifname: env('CNI_IFNAME') }, 3);
      return '';
    case 'GC': {
      const valid = conf['cni.dev/valid-attachments'] ?? conf['cni.dev/attachments'] ?? [];
      await berthd(call, conf, 'gc', { network, list: conf.name ?? '', valid });
      return '';
    }
    case 'STATUS':
      try {
        await berthd(call, conf, 'status', { network });
      } catch (e) {
        // The spec's "not available": a runtime stops sending ADDs until it is back.
        throw new CniError(50, (e as Error).message);
      }
      return '';
    default:
      throw new CniError(4, `unknown CNI_COMMAND ${command || '(unset)'}`);
  }
}

/** A call's whole outcome as the executable gives it: what it prints, and its exit status. */
export async function pluginOutcome(command: string, input: string, env: Env = process.env, call: BerthdCall = overSocket): Promise<{ stdout: string; exit: 0 | 1 }> {
  let version = '1.1.0';
  try { version = (JSON.parse(input) as Conf).cniVersion ?? version; } catch { /* reported below */ }
  try {
    const out = await runPlugin(command, input, env, call);
    return { stdout: out ? `${out}\n` : '', exit: 0 };
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(999, (e as Error).message);
    return { stdout: `${JSON.stringify(err.body(version))}\n`, exit: 1 };
  }
}

/** The Node executable's body (bin/berth-cni-node): stdin and CNI_* in, a result or a CNI error out. */
export async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const { stdout, exit } = await pluginOutcome(process.env.CNI_COMMAND ?? '', Buffer.concat(chunks).toString());
  process.stdout.write(stdout);
  process.exitCode = exit;
}

