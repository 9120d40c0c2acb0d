import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { promises as fs } from 'node:fs';
import type { Duplex } from 'node:stream';
import { BadRequestError, NotFoundError } from '../util/errors.js';
import type { ApiContext } from './context.js';
import { API_VERSION, MIN_API_VERSION, compareVersions, sendError } from './http.js';
import { Router, type RequestContext } from './router.js';
import { containerRoutes } from './routes/containers.js';
import { execRoutes } from './routes/exec.js';
import { imageRoutes } from './routes/images.js';
import { networkRoutes } from './routes/networks.js';
import { systemRoutes } from './routes/system.js';
import { volumeRoutes } from './routes/volumes.js';
import { commitRoutes } from './routes/commit.js';
import { swarmRoutes } from './routes/swarm.js';
import { metricsRoutes } from './routes/metrics.js';
import { cniRoutes } from './routes/cni.js';
import { policyRoutes } from './routes/policy.js';
import { traceRoutes } from './routes/trace.js';
import { SlowRequests } from './slowrequests.js';

const VERSION_PREFIX = /^\/v(\d+\.\d+)(\/.*)$/;

/**
 * The most bytes of request line and headers berthd parses. Node's default is 16 KiB; Docker's
 * is 1 MiB. The largest header the CLI sends, X-Registry-Config (every credential of the client's
 * config, for a build), is a few kilobytes for a usual config: four times Node's default leaves
 * room for many registries. Past it the request is refused before any handler runs: 431.
 */
export const HEADER_LIMIT = 64 * 1024;

/**
 * What Node's parser refuses, answered as berthd's other errors are (a JSON message) instead of
 * Node's bare status line, so a client can tell berthd refused it and why.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // The parser refuses every later chunk of a refused request too: those are read and dropped.
  if (answered.has(socket)) return;
  // A request whose handler runs already (a body that broke off mid-way): Node's own way, below.
  const inFlight = (socket as unknown as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const [status, reason, message] = err.code === 'HPE_HEADER_OVERFLOW'
    ? [431, 'Request Header Fields Too Large', `request headers too large: the request line and headers can be at most ${HEADER_LIMIT} bytes`]
    : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? [413, 'Payload Too Large', 'chunk extensions too large']
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request Timeout', 'request timeout']
    : [400, 'Bad Request', `malformed HTTP request: ${err.code ?? err.message}`];
  const body = JSON.stringify({ message }) + '\n';
  answered.add(socket);
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  // Closing while the client still writes (the rest of a 1 MB header) resets the connection, and
  // the client loses the answer before it reads it; Go's server waits too (rstAvoidanceDelay).
  // With a handler running, its own answer must not follow this one: closed at once, as Node does.
  if (inFlight) socket.destroy();
  else setTimeout(() => socket.destroy(), 1000).unref();
}

const answered = new WeakSet<Duplex>();

export function buildRouter(api: ApiContext): Router {
  const r = new Router();
  systemRoutes(r, api);
  containerRoutes(r, api);
  execRoutes(r, api);
  imageRoutes(r, api);
  networkRoutes(r, api);
  volumeRoutes(r, api);
  commitRoutes(r, api);
  swarmRoutes(r, api);
  metricsRoutes(r, api);
  policyRoutes(r, api);
  traceRoutes(r, api);
  cniRoutes(r, api);
  return r;
}

/**
 * Requests that last as long as their client wants (streams, waits, transfers): never "slow".
 * GETs and upgraded requests (attach, exec start) are left out as well.
 */
const STREAMING = /\/(wait|attach|build|images\/create|push|load|import|exec\/[^/]+\/start|archive|session|grpc|pull)$/;

/** The Docker Engine API over HTTP on a unix socket, with and without /v1.xx/ prefixes. */
export class ApiServer {
  private readonly server: Server;
  private readonly router: Router;
  private readonly slow: SlowRequests;
  private readonly stopSlowWatch: () => void;

  /** `slowRequestMs`: a request with no answer for this long is logged with its container's progress (0: never). */
  constructor(private readonly api: ApiContext, private readonly debug = false, slowRequestMs = 0) {
    this.router = buildRouter(api);
    this.slow = new SlowRequests((ref) => api.engine.progressOf(ref));
    this.stopSlowWatch = slowRequestMs > 0 ? this.slow.watch((line) => console.error(line), slowRequestMs) : () => undefined;
    this.server = createServer({ maxHeaderSize: HEADER_LIMIT }, (req, res) => void this.handle(req, res));
    this.server.on('clientError', answerClientError);
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      // Attach and exec start arrive here; the handler takes over the raw socket.
      void this.handle(req, new UpgradeResponse(socket) as unknown as ServerResponse, { socket, head });
    });
    this.server.keepAliveTimeout = 60_000;
    this.server.headersTimeout = 0;
    this.server.requestTimeout = 0;
  }

  async listen(socketPath: string): Promise<void> {
    await fs.rm(socketPath, { force: true });
    // Create the socket with no permissions for others from the first moment, then set 0660.
    const oldMask = process.umask(0o117);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(socketPath, () => { this.server.off('error', reject); resolve(); });
      });
    } finally {
      process.umask(oldMask);
    }
    await fs.chmod(socketPath, 0o660);
    await fs.chown(socketPath, 0, 0);
  }

  close(): Promise<void> {
    this.stopSlowWatch();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse, upgrade?: { socket: Duplex; head: Buffer }): Promise<void> {
    if (this.debug) console.error(`berthd: ${req.method} ${req.url}${upgrade ? ' (upgrade)' : ''}`);
    try {
      const url = new URL(req.url ?? '/', 'http://berth');
      let path = url.pathname;
      let version = API_VERSION;
      const m = VERSION_PREFIX.exec(path);
      if (m) {
        version = m[1]!;
        path = m[2]!;
        if (compareVersions(version, API_VERSION) > 0) {
          throw new BadRequestError(`client version ${version} is too new. Maximum supported API version is ${API_VERSION}`);
        }
        if (compareVersions(version, MIN_API_VERSION) < 0) {
          throw new BadRequestError(`client version ${version} is too old. Minimum supported API version is ${MIN_API_VERSION}, please upgrade your client to a newer version`);
        }
      }
      res.setHeader?.('Api-Version', API_VERSION);
      res.setHeader?.('Docker-Experimental', 'false');
      res.setHeader?.('Ostype', 'linux');
      res.setHeader?.('Server', `Docker/${this.api.info.version} (linux)`);
      res.setHeader?.('Builder-Version', '1');
      const found = this.router.match(req.method ?? 'GET', path);
      if (found === undefined) throw new NotFoundError('page not found');
      // Docker's router answers a known path with another method exactly as an unknown path.
      if (found === 'method') throw new NotFoundError('page not found');
      const ctx: RequestContext = { req, res, params: found.params, query: url.searchParams, version, upgrade };
      if (upgrade || req.method === 'GET' || STREAMING.test(path)) await found.handler(ctx);
      else await this.slow.track(`${req.method} ${path}`, path.startsWith('/containers/') ? found.params.id : undefined, async () => { await found.handler(ctx); });
    } catch (e) {
      sendError(res, e);
      if (upgrade && !upgrade.socket.destroyed) upgrade.socket.end();
    }
  }
}

/**
 * For upgraded requests there is no ServerResponse; handlers get this stand-in, whose only use is
 * the error path before the hijack: it writes a plain HTTP response on the raw socket.
 */
class UpgradeResponse {
  headersSent = false;
  private status = 500;
  private headers: Record<string, string> = {};
  constructor(private readonly socket: Duplex) {}
  setHeader(k: string, v: string): void { this.headers[k] = v; }
  writeHead(s: number, h?: Record<string, string | number>): this {
    this.status = s;
    for (const [k, v] of Object.entries(h ?? {})) this.headers[k] = String(v);
    return this;
  }
  end(body?: string): this {
    const text = body ?? '';
    const lines = Object.entries({ ...this.headers, 'Content-Length': String(Buffer.byteLength(text)), Connection: 'close' })
      .map(([k, v]) => `${k}: ${v}\r\n`).join('');
    this.headersSent = true;
    this.socket.end(`HTTP/1.1 ${this.status} ${this.status < 300 ? 'OK' : 'Error'}\r\n${lines}\r\n${text}`);
    return this;
  }
  destroy(): void { this.socket.destroy(); }
}
