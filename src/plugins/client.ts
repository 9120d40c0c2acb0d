import { request } from 'node:http';
import type { PluginAddr } from './discovery.js';

/** The media type of Docker's plugin protocol (pkg/plugins/transport). */
export const PLUGIN_MIME = 'application/vnd.docker.plugins.v1.2+json';

export interface ClientOptions {
  /**
   * How long a call keeps trying to reach a plugin that does not answer the connection (Docker:
   * 30 s, backing off 1 s, 2 s, 4 s … between attempts, pkg/plugins/client.go).
   */
  retryMs: number;
  /** How long one attempt waits for an answer once sent; 0 waits for ever, as Docker does. */
  callTimeoutMs: number;
  /** The address, looked up again before each attempt: a plugin that comes back may come back elsewhere. */
  resolve: () => Promise<PluginAddr | undefined>;
  sleep?: (ms: number) => Promise<void>;
}

/** The plugin answered with a status other than 200; `message` is Docker's `Method: Err`. */
export class PluginStatusError extends Error {
  constructor(readonly status: number, readonly method: string, readonly detail: string) {
    super(`${method}: ${detail}`);
  }
}

/** The plugin could not be reached, or did not answer in time. */
export class PluginUnreachableError extends Error {}

/** Docker's backoff: 1 s doubled per retry, at most 30 s. */
export function backoffMs(retries: number): number {
  let b = 1;
  while (b < 30 && retries > 0) {
    b *= 2;
    retries--;
  }
  return Math.min(b, 30) * 1000;
}

function describe(addr: PluginAddr): string {
  return 'unix' in addr ? `unix ${addr.unix}` : `tcp ${addr.tcp.host}:${addr.tcp.port}`;
}

/**
 * One plugin's HTTP client: POST /Method with a JSON body, JSON back. Connection failures (the
 * plugin not there yet, restarting, or dying mid-call) are retried as Docker retries them; an
 * answer, even an error, is final. No connection is kept between calls.
 */
export class PluginClient {
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(readonly name: string, private readonly o: ClientOptions) {
    this.sleep = o.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  async call<T = Record<string, unknown>>(method: string, body: unknown): Promise<T> {
    const start = Date.now();
    for (let retries = 0; ; retries++) {
      const addr = await this.o.resolve();
      let failure: string;
      if (!addr) {
        failure = 'plugin not found';
      } else {
        const r = await this.once(addr, method, body);
        if ('answer' in r) return r.answer as T;
        if (r.final) throw new PluginUnreachableError(`${method}: ${r.failure}`);
        failure = `${describe(addr)}: ${r.failure}`;
      }
      const wait = backoffMs(retries);
      if (Date.now() - start + wait >= this.o.retryMs) throw new PluginUnreachableError(`${method}: ${failure}`);
      console.error(`berthd: plugin ${this.name}: ${method}: ${failure}, retrying in ${wait / 1000}s`);
      await this.sleep(wait);
    }
  }

  private once(addr: PluginAddr, method: string, body: unknown): Promise<{ answer: unknown } | { failure: string; final: boolean }> {
    const data = body === undefined ? Buffer.alloc(0) : Buffer.from(`${JSON.stringify(body)}\n`);
    return new Promise((resolve, reject) => {
      let settled = false;
      const done = (v: { answer: unknown } | { failure: string; final: boolean }) => {
        if (!settled) { settled = true; resolve(v); }
      };
      const req = request({
        ...('unix' in addr ? { socketPath: addr.unix } : { host: addr.tcp.host, port: addr.tcp.port }),
        method: 'POST', path: `/${method}`, agent: false,
        headers: { Accept: PLUGIN_MIME, 'Content-Type': PLUGIN_MIME, 'Content-Length': String(data.length) },
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => done({ failure: e.message, final: false }));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) {
            let detail = text.trim();
            try {
              const err = (JSON.parse(text) as { Err?: unknown }).Err;
              if (typeof err === 'string' && err) detail = err;
            } catch { /* not JSON: the body is the message, as in Docker */ }
            if (!settled) { settled = true; reject(new PluginStatusError(res.statusCode ?? 0, method, detail)); }
            return;
          }
          try {
            done({ answer: text.trim() ? JSON.parse(text) : {} });
          } catch (e) {
            done({ failure: `bad answer: ${(e as Error).message}`, final: true });
          }
        });
      });
      if (this.o.callTimeoutMs > 0) {
        req.setTimeout(this.o.callTimeoutMs, () => {
          done({ failure: `no answer within ${this.o.callTimeoutMs / 1000}s`, final: true });
          req.destroy();
        });
      }
      req.on('error', (e: NodeJS.ErrnoException) => done({ failure: e.code ? `${e.code} ${e.message}` : e.message, final: false }));
      req.end(data);
    });
  }
}
