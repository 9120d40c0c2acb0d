/**
 * The CLI's side of the Engine API: plain HTTP over berthd's unix socket (or TCP), JSON in and
 * out, streams for logs/events/load/save, and the upgrade hijack that attach and exec use.
 */
import http from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { CommandAgent, parseSshUrl, REMOTE_DIAL, sshArgv, type SshTarget } from './remote.js';

export const API_VERSION = '1.41';
export const DEFAULT_HOST = 'unix:///run/berth/berth.sock';

/** An answer from the daemon with an error status; the message is the daemon's own. */
export class DaemonError extends Error {
  override name = 'DaemonError';
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The daemon could not be reached at all. */
export class ConnectError extends Error {
  override name = 'ConnectError';
}

export type Query = Record<string, string | number | boolean | string[] | undefined>;

export interface RequestOptions {
  query?: Query;
  /** JSON-encoded unless it is a stream or a Buffer. */
  body?: unknown;
  headers?: Record<string, string>;
}

interface Target { socketPath?: string; host?: string; port?: number; ssh?: SshTarget }

export function parseHost(spec: string): Target {
  if (spec.startsWith('unix://')) return { socketPath: spec.slice('unix://'.length) };
  if (spec.startsWith('ssh://')) return { ssh: parseSshUrl(spec) };
  if (spec.startsWith('/')) return { socketPath: spec };
  const m = /^(?:tcp|http):\/\/\[?([^\]]+?)\]?:(\d+)\/?$/.exec(spec);
  if (m) return { host: m[1]!, port: Number(m[2]) };
  throw new Error(`unable to parse host "${spec}": use unix:///path/to/socket, tcp://host:port or ssh://[user@]host[:port]`);
}

/** -H wins, then BERTH_HOST, then DOCKER_HOST (so a user's habits carry over), then the default. */
export function resolveHost(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env.BERTH_HOST || env.DOCKER_HOST || DEFAULT_HOST;
}

export function queryString(q: Query | undefined): string {
  if (!q) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) {
      const s = typeof one === 'boolean' ? (one ? '1' : '0') : String(one);
      parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(s)}`);
    }
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

function isStream(x: unknown): x is Readable {
  return typeof x === 'object' && x !== null && typeof (x as Readable).pipe === 'function';
}

/** Docker's JSON error body is {"message": "..."}; anything else is shown as it came. */
function errorMessage(body: Buffer, status: number): string {
  const text = body.toString('utf8').trim();
  try {
    const parsed = JSON.parse(text) as { message?: string };
    if (typeof parsed.message === 'string') return parsed.message;
  } catch {
    // not JSON: fall through
  }
  return text || `HTTP ${status}`;
}

export async function readJson<T>(res: Readable): Promise<T> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as T;
}

export class Client {
  private readonly target: Target;
  private sshAgent?: CommandAgent;

  constructor(readonly host: string) {
    this.target = parseHost(host);
  }

  private open(method: string, path: string, opts: RequestOptions, upgrade = false): http.ClientRequest {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined && !isStream(opts.body) && !Buffer.isBuffer(opts.body)) headers['Content-Type'] ??= 'application/json';
    if (upgrade) Object.assign(headers, { Connection: 'Upgrade', Upgrade: 'tcp' });
    const { ssh, ...target } = this.target;
    // Over ssh a connection is an `ssh … berth system dial-stdio` (as docker's connhelper), kept
    // for the command's next request.
    if (ssh) this.sshAgent ??= new CommandAgent(sshArgv(ssh, REMOTE_DIAL));
    return http.request({
      ...target,
      method,
      path: `/v${API_VERSION}${path}${queryString(opts.query)}`,
      headers,
      // On the socket, one request per connection: the CLI is short-lived and hijacked sockets must not be pooled.
      agent: this.sshAgent ?? false,
    });
  }

  private send(req: http.ClientRequest, body: unknown): void {
    if (body === undefined) req.end();
    else if (isStream(body)) body.pipe(req);
    else if (Buffer.isBuffer(body)) req.end(body);
    else req.end(JSON.stringify(body));
  }

  private connectError(e: NodeJS.ErrnoException): Error {
    if (this.target.ssh && !e.code) return new ConnectError(`error during connect: ${e.message}`);
    if (['ENOENT', 'ECONNREFUSED', 'EACCES', 'ENOTSOCK'].includes(e.code ?? '')) {
      const why = e.code === 'EACCES' ? ' (permission denied: berthd\'s socket is root\'s)' : '';
      return new ConnectError(`Cannot connect to berthd at ${this.host}${why}. Is berthd running?`);
    }
    return e;
  }

  /** A response whose body the caller reads as a stream; error statuses are thrown. */
  stream(method: string, path: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = this.open(method, path, opts);
      req.on('error', (e) => reject(this.connectError(e)));
      req.on('response', (res) => {
        if ((res.statusCode ?? 500) < 400) return resolve(res);
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => reject(new DaemonError(res.statusCode ?? 500, errorMessage(Buffer.concat(chunks), res.statusCode ?? 500))));
        res.on('error', reject);
      });
      this.send(req, opts.body);
    });
  }

  async raw(method: string, path: string, opts: RequestOptions = {}): Promise<{ status: number; body: Buffer }> {
    const res = await this.stream(method, path, opts);
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    return { status: res.statusCode ?? 0, body: Buffer.concat(chunks) };
  }

  async json<T = any>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const { body } = await this.raw(method, path, opts);
    const text = body.toString('utf8');
    return (text.trim() === '' ? undefined : JSON.parse(text)) as T;
  }

  /**
   * POST with an upgrade to a raw stream (attach, exec start). Resolves with the socket once the
   * daemon has switched protocols; the caller owns it from then on.
   */
  hijack(path: string, opts: RequestOptions = {}): Promise<Duplex> {
    return new Promise((resolve, reject) => {
      const req = this.open('POST', path, opts, true);
      req.on('error', (e) => reject(this.connectError(e)));
      req.on('upgrade', (_res, socket, head) => {
        if (head.length) socket.unshift(head);
        resolve(socket);
      });
      req.on('response', (res) => {
        // A daemon that answers without upgrading is reporting an error (or is not berthd/docker).
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const status = res.statusCode ?? 500;
          reject(new DaemonError(status, status >= 400 ? errorMessage(Buffer.concat(chunks), status) : 'the daemon did not switch protocols'));
        });
      });
      this.send(req, opts.body);
    });
  }
}
