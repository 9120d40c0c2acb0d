/**
 * The topology page's HTTP server: loopback only, every request behind a random token carried in
 * the URL (as Jupyter's), read-only. The page gets the topology over server-sent events, one
 * whole document per change, and a container's inspect digest on request.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { DaemonError } from '../cli/client.js';
import { PACKAGE_ROOT } from '../daemon/paths.js';
import { errorMessage } from '../util/errors.js';
import type { TopologySource } from './source.js';

const STATIC_DIR = join(PACKAGE_ROOT, 'src', 'ui', 'static');
const ASSETS: Record<string, { file: string; type: string }> = {
  '/static/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/static/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};
/** Nothing but this origin: no script, style, font or connection elsewhere, no framing. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const SSE_PING_MS = 15_000;

/**
 * `HOST:PORT` on a loopback address only: the page shows every container of the daemon and its
 * token travels in the URL, so it is for this machine's browser (another machine reaches it
 * through an ssh tunnel).
 */
export function parseUiAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(addr.trim());
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`--addr: expected HOST:PORT such as 127.0.0.1:0 (0 picks a free port), got "${addr}"`);
  const host = m[1] ?? m[2]!;
  if (host === 'localhost') return { host: '127.0.0.1', port };
  // URL writes an IPv6 address in its one canonical form.
  const loopback = (isIP(host) === 4 && host.startsWith('127.')) || (isIP(host) === 6 && new URL(`http://[${host}]/`).hostname === '[::1]');
  if (!loopback) throw new Error(`--addr: refusing to serve on ${host}: the page is for this machine only (use 127.0.0.1, or an ssh tunnel from another machine)`);
  return { host, port };
}

export class UiServer {
  readonly token: string;
  private readonly tokenDigest: Buffer;
  private readonly server: Server;
  private readonly streams = new Set<ServerResponse>();
  private readonly assets = new Map<string, Buffer>();
  private readonly page: string;

  constructor(private readonly source: TopologySource, token = randomBytes(24).toString('base64url')) {
    this.token = token;
    this.tokenDigest = digest(token);
    for (const [path, a] of Object.entries(ASSETS)) this.assets.set(path, readFileSync(join(STATIC_DIR, a.file)));
    this.page = readFileSync(join(STATIC_DIR, 'index.html'), 'utf8');
    this.server = createServer((req, res) => this.handle(req, res));
    source.on('change', () => this.broadcast());
    source.on('status', () => this.broadcast());
  }

  listen(addr: string): Promise<string> {
    const { host, port } = parseUiAddr(addr);
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const a = this.server.address() as AddressInfo;
        resolve(`http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/?token=${this.token}`);
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.streams) s.end();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** Constant time: the comparison of two digests of equal length does not tell how much matched. */
  private authorized(req: IncomingMessage, url: URL): boolean {
    const given = url.searchParams.get('token') ?? /^token\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    return given !== undefined && given !== null && timingSafeEqual(digest(given), this.tokenDigest);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://berth-ui');
    const headers = { 'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer', 'Cache-Control': 'no-store' };
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    if (!this.authorized(req, url)) {
      return text(res, 403, 'Forbidden: open the URL with the token that `berth ui` printed.\n');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return text(res, 405, 'The page is read-only.\n');
    }
    const path = url.pathname;
    if (path === '/' || path === '/index.html') {
      return send(res, 200, 'text/html; charset=utf-8', Buffer.from(this.page.replaceAll('{{TOKEN}}', encodeURIComponent(this.token))));
    }
    const asset = this.assets.get(path);
    if (asset) return send(res, 200, ASSETS[path]!.type, asset);
    if (path === '/api/topology') return json(res, 200, { topology: this.source.current ?? null, status: this.source.state });
    if (path === '/api/events') return this.subscribe(req, res);
    const m = /^\/api\/containers\/([A-Za-z0-9][A-Za-z0-9_.-]*)$/.exec(path);
    if (m) {
      this.source.inspect(m[1]!).then((s) => json(res, 200, s), (e) => {
        json(res, e instanceof DaemonError ? e.status : 502, { message: errorMessage(e) });
      });
      return;
    }
    text(res, 404, 'Not found.\n');
  }

  private subscribe(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', Connection: 'keep-alive' });
    // EventSource reconnects by itself; two seconds is soon enough after berth ui restarts.
    res.write('retry: 2000\n\n');
    this.streams.add(res);
    this.push(res);
    const ping = setInterval(() => res.write(': ping\n\n'), SSE_PING_MS);
    req.on('close', () => {
      clearInterval(ping);
      this.streams.delete(res);
    });
  }

  private broadcast(): void {
    for (const s of this.streams) this.push(s);
  }

  private push(res: ServerResponse): void {
    res.write(`event: topology\ndata: ${JSON.stringify({ topology: this.source.current ?? null, status: this.source.state })}\n\n`);
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function send(res: ServerResponse, status: number, type: string, body: Buffer): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': body.length });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function text(res: ServerResponse, status: number, body: string): void {
  send(res, status, 'text/plain; charset=utf-8', Buffer.from(body));
}

function json(res: ServerResponse, status: number, body: unknown): void {
  send(res, status, 'application/json', Buffer.from(JSON.stringify(body)));
}
