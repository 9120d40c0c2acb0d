/**
 * API round trips as polling clients make them (testcontainers, compose, monitoring): `/_ping` on a
 * kept-alive connection and on a new one, `/version`, `GET /containers/json?all=1` and `/networks`
 * with 0 and 200 containers, `GET /containers/ID/json`. Measured with a raw HTTP/1.1 client on the
 * unix socket (a request written by hand, the answer read up to its Content-Length), since a
 * high-level client's own overhead hides differences of tens of microseconds. Each value is the
 * median of a batch of requests; batches are interleaved engine by engine.
 */
import { connect, type Socket } from 'node:net';
import type { BenchContext } from '../context.js';
import type { Engine } from '../engines.js';
import { now } from '../util.js';

/** One kept-alive connection that sends GETs and reads whole answers (Content-Length or chunked). */
class RawClient {
  private buf = Buffer.alloc(0);
  private waiter?: () => void;
  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.waiter?.(); });
  }

  static open(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  /** Sends one GET and resolves with the status once the whole body is in. */
  async get(path: string): Promise<number> {
    this.sock.write(`GET ${path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: berth-bench\r\n\r\n`);
    for (;;) {
      const done = this.complete();
      if (done) return done;
      await new Promise<void>((r) => { this.waiter = r; });
    }
  }

  /** The status of a complete answer at the head of the buffer (and drops it), else 0. */
  private complete(): number {
    const head = this.buf.indexOf('\r\n\r\n');
    if (head < 0) return 0;
    const headers = this.buf.subarray(0, head).toString('latin1');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(headers)?.[1] ?? 0);
    const len = /\r\ncontent-length: *(\d+)/i.exec(headers);
    let end: number;
    if (len) {
      end = head + 4 + Number(len[1]);
      if (this.buf.length < end) return 0;
    } else if (/\r\ntransfer-encoding: *chunked/i.test(headers)) {
      const last = this.buf.indexOf('\r\n0\r\n\r\n', head);
      if (last < 0) return 0;
      end = last + 7;
    } else {
      end = head + 4;
    }
    this.buf = this.buf.subarray(end);
    return status;
  }

  close(): void { this.sock.destroy(); }
}

async function batch(e: Engine, path: string, n: number, fresh: boolean): Promise<number> {
  const times: number[] = [];
  let kept = fresh ? undefined : await RawClient.open(e.socket);
  for (let i = 0; i < n; i++) {
    const t0 = now();
    const c = kept ?? await RawClient.open(e.socket);
    const status = await c.get(`/v1.41${path}`);
    if (fresh) c.close();
    times.push(now() - t0);
    if (status !== 200) throw new Error(`${e.name}: GET ${path}: ${status}`);
  }
  kept?.close();
  kept = undefined;
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

export async function api(ctx: BenchContext): Promise<void> {
  const R = ctx.results;
  const group = 'API round trips (ms, median per request, lower is better)';
  const def = (key: string, label: string) => R.define({ key, group, label, unit: 'ms', better: 'lower' });
  def('api_ping', '`GET /_ping`, kept-alive connection');
  def('api_ping_new', '`GET /_ping`, new connection each');
  def('api_version', '`GET /version`');
  def('api_ps_0', '`GET /containers/json?all=1`, 0 containers');
  def('api_networks_0', '`GET /networks`, 0 containers');
  def('api_ps_200', '`GET /containers/json?all=1`, 200 containers');
  def('api_networks_200', '`GET /networks`, 200 containers');
  def('api_inspect', '`GET /containers/ID/json`');

  const reps = ctx.quick ? 3 : 9;
  const n = ctx.quick ? 200 : 500;
  const round = async (cases: Array<[string, string, boolean]>) => {
    for (let rep = -1; rep < reps; rep++) {
      for (const e of ctx.order(rep)) {
        for (const [key, path, fresh] of cases) {
          const v = await batch(e, path, n, fresh);
          if (rep >= 0) R.add(key, e.name, v);
        }
      }
    }
  };
  for (const e of ctx.engines) await e.removeAll();
  await round([['api_ping', '/_ping', false], ['api_ping_new', '/_ping', true], ['api_version', '/version', false],
    ['api_ps_0', '/containers/json?all=1', false], ['api_networks_0', '/networks', false]]);
  // 200 created containers (not started: the listing, not the runtime, is measured; `all=1` lists them).
  const count = ctx.quick ? 50 : 200;
  if (ctx.quick) R.note('api_ps_200', `quick run: ${count} containers`);
  for (const e of ctx.engines) {
    for (let i = 0; i < count; i += 10) {
      await Promise.all(Array.from({ length: Math.min(10, count - i) }, (_, j) =>
        e.apiOk('POST', `/containers/create?name=bbapi${i + j}`, { Image: 'busybox', Cmd: ['true'], Labels: { bench: 'api' } })));
    }
  }
  await round([['api_ps_200', '/containers/json?all=1', false], ['api_networks_200', '/networks', false], ['api_inspect', '/containers/bbapi0/json', false]]);
  for (const e of ctx.engines) await e.removeAll();
}
