import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { ApiError, NotFoundError } from '../../util/errors.js';
import { parseChallenge, type AuthConfig, type Challenge } from './auth.js';
import { endpointHost, fullName, type RemoteRef } from './reference.js';

export const MEDIA = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

const MANIFEST_ACCEPT = [MEDIA.dockerManifest, MEDIA.dockerList, MEDIA.ociManifest, MEDIA.ociIndex].join(', ');
const MAX_MANIFEST = 4 << 20;

export interface RegistryOptions {
  /** Docker's insecure-registries: host[:port] names or CIDRs reached over plain HTTP. */
  insecure: string[];
}

/** Docker allows plain HTTP to loopback registries without configuration; so do we. */
export function isInsecure(domain: string, opts: RegistryOptions): boolean {
  const host = hostOf(domain);
  if (host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))) return true;
  for (const entry of opts.insecure) {
    if (entry === domain || entry === host) return true;
    const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(entry);
    if (m && isIP(host) === 4 && inCidr(host, m[1]!, Number(m[2]))) return true;
  }
  return false;
}

function hostOf(domain: string): string {
  if (domain.startsWith('[')) return domain.slice(1, domain.indexOf(']'));
  const i = domain.lastIndexOf(':');
  return i > 0 && domain.indexOf(':') === i ? domain.slice(0, i) : domain;
}

function ipNum(ip: string): number {
  return ip.split('.').reduce((a, o) => (a << 8) + Number(o), 0) >>> 0;
}

function inCidr(ip: string, net: string, bits: number): boolean {
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return ((ipNum(ip) & mask) >>> 0) === ((ipNum(net) & mask) >>> 0);
}

/** An error the registry answered with, carrying Docker's status for it. */
export class RegistryError extends ApiError {
  constructor(status: number, message: string, readonly code?: string) { super(status, message); }
}

interface ErrorBody { errors?: Array<{ code?: string; message?: string; detail?: unknown }> }

/** "unauthorized: authentication required" from the registry's JSON error body, as Docker relays it. */
async function describe(res: Response): Promise<{ code?: string; text: string }> {
  const body = await res.text().catch(() => '');
  try {
    const e = (JSON.parse(body) as ErrorBody).errors?.[0];
    if (e?.code) return { code: e.code, text: `${e.code.toLowerCase().replace(/_/g, ' ')}: ${e.message ?? ''}`.trim() };
  } catch { /* not JSON */ }
  return { text: body.trim().slice(0, 200) || `${res.status} ${res.statusText}` };
}

export interface Manifest { bytes: Buffer; mediaType: string; digest: string }

/**
 * One repository on one registry, with its credentials. It learns the registry's scheme and auth
 * challenge once (GET /v2/, as Docker does) and then sends every request with the right header, so
 * a streamed upload never has to be replayed after a 401.
 */
export class RegistryClient {
  private base?: string;
  private authHeader?: string;
  private challenge?: Challenge;

  constructor(readonly ref: RemoteRef, private readonly auth: AuthConfig | undefined, private readonly opts: RegistryOptions, private readonly actions: string) {}

  private get host(): string { return endpointHost(this.ref.domain); }

  /** Picks https, or for an insecure registry http when https does not answer, and authenticates. */
  async connect(): Promise<void> {
    if (this.base) return;
    const schemes = isInsecure(this.ref.domain, this.opts) ? ['https', 'http'] : ['https'];
    let last: unknown;
    for (const s of schemes) {
      const url = `${s}://${this.host}/v2/`;
      let res: Response;
      try {
        res = await fetch(url, { redirect: 'follow', signal: AbortSignal.timeout(30_000) });
      } catch (e) {
        last = e;
        continue;
      }
      await res.arrayBuffer().catch(() => undefined);
      this.base = `${s}://${this.host}`;
      if (res.status === 401) {
        this.challenge = parseChallenge(res.headers.get('www-authenticate'));
        await this.authenticate();
      }
      return;
    }
    const cause = (last as { cause?: { message?: string } })?.cause?.message ?? (last as Error)?.message ?? 'unreachable';
    throw new ApiError(500, `Get "${schemes[0]}://${this.host}/v2/": ${cause}`);
  }

  private async authenticate(scope = `repository:${this.ref.path}:${this.actions}`): Promise<void> {
    const ch = this.challenge;
    if (!ch) return;
    const basic = this.auth?.username ? `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password ?? ''}`).toString('base64')}` : undefined;
    if (ch.scheme === 'basic') {
      if (!basic) throw this.denied('no basic auth credentials');
      this.authHeader = basic;
      return;
    }
    if (this.auth?.registrytoken) {
      this.authHeader = `Bearer ${this.auth.registrytoken}`;
      return;
    }
    const realm = ch.params.realm;
    if (!realm) throw new ApiError(500, `registry ${this.host} sent a bearer challenge without a realm`);
    const url = new URL(realm);
    if (ch.params.service) url.searchParams.set('service', ch.params.service);
    if (scope) url.searchParams.set('scope', scope);
    const headers: Record<string, string> = {};
    if (basic) headers.Authorization = basic;
    let res: Response;
    try {
      res = await fetch(url, { headers, signal: AbortSignal.timeout(30_000) });
    } catch (e) {
      throw new ApiError(500, `Get "${url.origin}${url.pathname}": ${(e as { cause?: Error }).cause?.message ?? (e as Error).message}`);
    }
    if (!res.ok) {
      const d = await describe(res);
      throw new RegistryError(res.status === 401 || res.status === 403 ? 401 : 500, `Get "${url.origin}${url.pathname}": ${d.text}`, d.code);
    }
    const tok = (await res.json()) as { token?: string; access_token?: string };
    const t = tok.token ?? tok.access_token;
    if (!t) throw new ApiError(500, `token server ${url.origin} answered without a token`);
    this.authHeader = `Bearer ${t}`;
  }

  private denied(detail: string): RegistryError {
    return new RegistryError(401, `unauthorized: ${detail} for ${fullName(this.ref)}`, 'UNAUTHORIZED');
  }

  /** Checks credentials only (POST /auth): the /v2/ endpoint must answer 200 with them. */
  async login(): Promise<void> {
    await this.connect();
    const res = await this.request('GET', '/v2/');
    await res.arrayBuffer().catch(() => undefined);
    if (res.status !== 200) throw new RegistryError(401, `login attempt to ${this.base}/v2/ failed with status: ${res.status} ${res.statusText}`);
  }

  /** A path on this repository, made absolute by request() once the scheme is known. */
  url(path: string): string { return `/v2/${this.ref.path}/${path}`; }

  /** Sends with the auth header; a 401 on a request without a body renews the token once. */
  async request(method: string, url: string, init: { headers?: Record<string, string>; body?: unknown; retry?: boolean } = {}): Promise<Response> {
    await this.connect();
    if (url.startsWith('/')) url = `${this.base}${url}`;
    const headers: Record<string, string> = { ...init.headers };
    if (this.authHeader) headers.Authorization = this.authHeader;
    let res: Response;
    try {
      res = await fetch(url, {
        method, headers, redirect: 'follow',
        ...(init.body !== undefined ? { body: init.body as never, duplex: 'half' } : {}),
      } as RequestInit);
    } catch (e) {
      throw new ApiError(500, `${method[0]}${method.slice(1).toLowerCase()} "${url}": ${(e as { cause?: Error }).cause?.message ?? (e as Error).message}`);
    }
    if (res.status === 401 && init.body === undefined && init.retry !== false) {
      const ch = parseChallenge(res.headers.get('www-authenticate'));
      await res.arrayBuffer().catch(() => undefined);
      if (ch) {
        this.challenge = ch;
        await this.authenticate(ch.params.scope ?? undefined);
        return this.request(method, url, { ...init, retry: false });
      }
    }
    return res;
  }

  /** Fails with the registry's own words, mapped to Docker's statuses. */
  async fail(res: Response, what: string): Promise<never> {
    const d = await describe(res);
    if (res.status === 404) throw new RegistryError(404, `${what} not found: ${d.text}`, d.code);
    if (res.status === 401) throw new RegistryError(401, `${what}: ${d.text}`, d.code);
    if (res.status === 403) throw new RegistryError(403, `${what}: ${d.text}`, d.code);
    throw new RegistryError(500, `${what}: ${d.text}`, d.code);
  }

  /** GET a manifest by tag or digest; its digest is always computed here, never trusted. */
  async manifest(reference: string, display: string): Promise<Manifest> {
    const res = await this.request('GET', this.url(`manifests/${reference}`), { headers: { Accept: MANIFEST_ACCEPT } });
    if (res.status === 404) {
      const d = await describe(res);
      throw new NotFoundError(`manifest for ${display} not found: ${d.text}`);
    }
    if (res.status === 401 || res.status === 403) {
      const d = await describe(res);
      throw new RegistryError(res.status === 401 ? 401 : 403, `pull access denied for ${display.replace(/[:@][^:/@]*$/, '')}, repository does not exist or may require 'docker login': ${d.text}`, d.code);
    }
    if (!res.ok) await this.fail(res, `manifest for ${display}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    if (bytes.length > MAX_MANIFEST) throw new ApiError(500, `manifest for ${display} is larger than ${MAX_MANIFEST} bytes`);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new ApiError(500, `manifest verification failed for digest ${reference}`);
    }
    const claimed = res.headers.get('docker-content-digest');
    if (claimed && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new ApiError(500, `manifest verification failed for ${display}: registry says ${claimed}, content is ${digest}`);
    }
    let mediaType = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
    try {
      const doc = JSON.parse(bytes.toString()) as { mediaType?: string; schemaVersion?: number; manifests?: unknown; layers?: unknown };
      if (doc.mediaType) mediaType = doc.mediaType;
      else if (doc.schemaVersion === 1) mediaType = MEDIA.dockerSchema1;
      else if (doc.manifests) mediaType = MEDIA.ociIndex;
      else if (doc.layers && (!mediaType || mediaType === 'application/json')) mediaType = MEDIA.ociManifest;
    } catch {
      throw new ApiError(500, `manifest for ${display} is not JSON`);
    }
    return { bytes, mediaType, digest };
  }

  async blobExists(digest: string): Promise<boolean> {
    const res = await this.request('HEAD', this.url(`blobs/${digest}`));
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    return this.fail(res, `blob ${digest}`);
  }

  /** GET a blob, from byte `from` on when given (the answer is 206 if the registry honours it). */
  async getBlob(digest: string, from?: number): Promise<Response> {
    const res = await this.request('GET', this.url(`blobs/${digest}`), from ? { headers: { Range: `bytes=${from}-` } } : {});
    if (!res.ok) await this.fail(res, `blob ${digest}`);
    return res;
  }

  /** Monolithic upload: POST for a session, then one PUT with the whole blob and its digest. */
  async uploadBlob(digest: string, size: number, body: AsyncIterable<Uint8Array> | Buffer): Promise<void> {
    const start = await this.request('POST', this.url('blobs/uploads/'), { body: Buffer.alloc(0), headers: { 'Content-Length': '0' } });
    if (start.status !== 202) await this.fail(start, `upload of ${digest}`);
    await start.arrayBuffer().catch(() => undefined);
    const loc = start.headers.get('location');
    if (!loc) throw new ApiError(500, `registry ${this.host} started an upload without a Location`);
    await this.connect();
    const url = new URL(loc, this.base);
    url.searchParams.set('digest', digest);
    const put = await this.request('PUT', url.toString(), {
      body, headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
    });
    if (put.status !== 201) await this.fail(put, `upload of ${digest}`);
    await put.arrayBuffer().catch(() => undefined);
  }

  async putManifest(tag: string, mediaType: string, bytes: Buffer): Promise<string> {
    const res = await this.request('PUT', this.url(`manifests/${tag}`), { body: bytes, headers: { 'Content-Type': mediaType } });
    if (res.status !== 201) await this.fail(res, `manifest ${tag}`);
    await res.arrayBuffer().catch(() => undefined);
    return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  }
}
