import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, BadRequestError, errorMessage } from '../util/errors.js';

export const API_VERSION = '1.41';
export const MIN_API_VERSION = '1.12';

/** Orders two API versions ("1.41"): negative, zero or positive. */
export function compareVersions(a: string, b: string): number {
  const [a1, a2] = a.split('.').map(Number) as [number, number];
  const [b1, b2] = b.split('.').map(Number) as [number, number];
  return a1 - b1 || a2 - b2;
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendEmpty(res: ServerResponse, status: number): void {
  res.writeHead(status);
  res.end();
}

/** Docker's error body: {"message": "..."} with the status the error carries. */
export function sendError(res: ServerResponse, e: unknown): void {
  const status = e instanceof ApiError ? e.status : (e as { status?: number }).status ?? 500;
  if (status === 304) return sendEmpty(res, 304);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, { message: errorMessage(e) });
}

/**
 * The largest JSON body berth reads. Docker reads JSON bodies with no bound at all; berth has to
 * hold one in memory to parse it, and V8 keeps the heap it grew for good (two 100 MB bodies left
 * berthd at 186 MB). Real ones are kilobytes: a compose service with hundreds of labels is far
 * below this. Archives (load, import, build, cp) are not JSON: they stream to disk.
 */
export const JSON_BODY_LIMIT = 4 * 1024 * 1024;

/**
 * 413. The rest of the body is read and thrown away as it arrives (never held): closing the
 * connection instead makes a client that is still writing fail with EPIPE before it reads the
 * answer, and Node's client then never reports it.
 */
export class PayloadTooLargeError extends ApiError {
  constructor(limit: number, size?: number) {
    super(413, `request body too large${size !== undefined ? ` (${size} bytes)` : ''}: a JSON body can be at most ${limit} bytes`);
  }
}

export async function readBodyBuffer(req: IncomingMessage, limit = JSON_BODY_LIMIT): Promise<Buffer> {
  // A declared length over the limit is refused before a byte of it is read.
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) throw new PayloadTooLargeError(limit, declared);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      over = true;
      chunks.length = 0;
      reject(new PayloadTooLargeError(limit));
    });
    req.on('end', () => { if (!over) resolve(Buffer.concat(chunks)); });
    req.on('error', reject);
  });
}

/** Parses a JSON body; an empty body is {} as Docker treats it. */
export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const buf = await readBodyBuffer(req);
  return parseJsonBody(buf);
}

/**
 * For the routes where Docker decodes the body with json.Decoder and refuses an empty one
 * (network and volume create, the swarm writes): io.EOF becomes this 400.
 */
export async function readRequiredJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const buf = await readBodyBuffer(req);
  if (buf.toString().trim() === '') throw new BadRequestError('got EOF while reading request body');
  return parseJsonBody(buf);
}

export function parseJsonBody(buf: Buffer): Record<string, unknown> {
  if (buf.length === 0 || buf.toString().trim() === '') return {};
  try {
    const v = JSON.parse(buf.toString('utf8')) as unknown;
    if (v === null) return {};
    if (typeof v !== 'object' || Array.isArray(v)) throw new BadRequestError('invalid JSON body: expected an object');
    return v as Record<string, unknown>;
  } catch (e) {
    if (e instanceof ApiError) throw e;
    throw new BadRequestError(`invalid JSON body: ${errorMessage(e)}`);
  }
}

export function boolParam(v: string | null, def = false): boolean {
  if (v === null || v === '') return def;
  return !['0', 'false', 'False', 'FALSE', 'no'].includes(v);
}

export function intParam(v: string | null, _name: string): number | undefined {
  if (v === null || v === '') return undefined;
  const n = Number(v);
  // strconv.Atoi's words, which Docker passes on (it names no parameter).
  if (!/^[+-]?\d+$/.test(v) || !Number.isSafeInteger(n)) throw new BadRequestError(`strconv.Atoi: parsing "${v}": invalid syntax`);
  return n;
}

/** Docker's filters query: {"key":["v1","v2"]} or the legacy {"key":{"v1":true}}. */
export function parseFilters(v: string | null): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (!v) return out;
  let obj: unknown;
  try { obj = JSON.parse(v); } catch { throw new BadRequestError(`invalid filter '${v}'`); }
  if (typeof obj !== 'object' || obj === null) throw new BadRequestError(`invalid filter '${v}'`);
  for (const [k, val] of Object.entries(obj as Record<string, unknown>)) {
    if (Array.isArray(val)) out.set(k, val.map(String));
    else if (val && typeof val === 'object') out.set(k, Object.keys(val).filter((x) => (val as Record<string, unknown>)[x]));
    else throw new BadRequestError(`invalid filter '${k}'`);
  }
  return out;
}

export function checkFilterKeys(filters: Map<string, string[]>, allowed: string[]): void {
  for (const k of filters.keys()) {
    // Docker's words (api/types/filters invalidFilter).
    if (!allowed.includes(k)) throw new BadRequestError(`Invalid filter '${k}'`);
  }
}

export { labelsMatch } from '../util/labels.js';
