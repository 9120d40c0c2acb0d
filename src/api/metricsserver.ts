import { createServer, type Server } from 'node:http';
import { CONTENT_TYPE } from '../metrics/exposition.js';
import { errorMessage } from '../util/errors.js';

/**
 * `berthd --metrics-addr HOST:PORT`, as Docker's flag: plain HTTP on TCP serving GET /metrics and
 * nothing else (the Engine API stays on the unix socket). It has no authentication, so the
 * address is the operator's choice of who may read it; Docker's example, and berth's, is loopback.
 */
export class MetricsServer {
  private readonly server: Server;

  constructor(metrics: () => Promise<string>) {
    this.server = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://berth').pathname;
      if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('404 page not found\n');
        return;
      }
      metrics().then((body) => {
        res.writeHead(200, { 'Content-Type': CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) });
        res.end(req.method === 'HEAD' ? undefined : body);
      }, (e) => {
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${errorMessage(e)}\n`);
      });
    });
    this.server.keepAliveTimeout = 60_000;
  }

  listen(addr: string): Promise<void> {
    const { host, port } = parseMetricsAddr(addr);
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => { this.server.off('error', reject); resolve(); });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/** HOST:PORT or [IPv6]:PORT, as Docker's --metrics-addr takes it. */
export function parseMetricsAddr(addr: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(addr.trim());
  const port = Number(m?.[2]);
  if (!m || !m[1] || port > 65535) throw new Error(`--metrics-addr: expected HOST:PORT such as 127.0.0.1:9323, got "${addr}"`);
  return { host: m[1], port };
}
