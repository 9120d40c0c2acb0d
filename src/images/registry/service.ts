import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs, type WriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { ApiError, BadRequestError, NotFoundError } from '../../util/errors.js';
import { formatRepoTag, parseReference } from '../reference.js';
import type { StreamingLayer } from '../layers.js';
import { goArch, type LocalImageStore } from '../store.js';
import type { ImageConfigFile, ImageRecord } from '../types.js';
import type { AuthConfig } from './auth.js';
import { MEDIA, RegistryClient, type RegistryOptions } from './client.js';
import { throttled, type Progress } from './progress.js';
import { DOCKER_HUB, fullName, parseRemote, type RemoteRef } from './reference.js';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
}

interface ManifestDoc { schemaVersion?: number; mediaType?: string; config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] }

/** A layer blob ready to upload; scratch ones are deleted after the push. */
interface PushBlob { path: string; digest: string; size: number; scratch: boolean }

/** Docker pulls and pushes three layers at a time. */
const PARALLEL = 3;

async function eachLimit<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (next < items.length && failed === undefined) {
      const i = next++;
      try { out[i] = await fn(items[i]!, i); } catch (e) { failed ??= e; }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed !== undefined) throw failed;
  return out;
}

/**
 * Download slots. A layer holds one while its bytes arrive and gives it back before tar has
 * finished unpacking, so the next download starts at once (Docker too counts only downloads).
 * After a failure, layers still waiting for a slot are not started.
 */
class Slots {
  private readonly queue: Array<{ go: () => void; stop: (e: unknown) => void }> = [];
  private failed?: { e: unknown };
  constructor(private free: number) {}

  async take(): Promise<() => void> {
    if (this.failed) throw this.failed.e;
    if (this.free > 0) this.free--;
    else await new Promise<void>((go, stop) => this.queue.push({ go, stop }));
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const next = this.queue.shift();
      if (next) next.go(); else this.free++;
    };
  }

  fail(e: unknown): void {
    this.failed ??= { e };
    for (const q of this.queue.splice(0)) q.stop(e);
  }
}

function shortDigest(d: string): string { return d.replace(/^sha256:/, '').slice(0, 12); }

export function parsePlatform(p: string | undefined): { os: string; architecture: string; variant?: string } {
  if (!p) return { os: 'linux', architecture: goArch() };
  const [os, architecture, variant] = p.toLowerCase().split('/');
  if (!os || !architecture) throw new BadRequestError(`invalid platform ${p}: use os/arch[/variant], e.g. linux/amd64`);
  return { os, architecture, ...(variant ? { variant } : {}) };
}

/**
 * Pull and push over the OCI distribution API into and out of the local store. Layers are
 * fetched by the diff ids the (verified) config names, so a layer the store has is never
 * downloaded again, and two pulls that need the same layer share one download.
 */
export class RegistryService {
  /** diff id → the download+install under way, shared by concurrent pulls. */
  private readonly inflight = new Map<string, Promise<void>>();
  /** diff ids a running pull relies on: a failing pull must not delete them under it. */
  private readonly pinned = new Map<string, number>();

  constructor(private readonly store: LocalImageStore, readonly opts: RegistryOptions) {}

  private pin(ids: string[], by: 1 | -1): void {
    for (const id of ids) {
      const n = (this.pinned.get(id) ?? 0) + by;
      if (n > 0) this.pinned.set(id, n); else this.pinned.delete(id);
    }
  }

  /** Checks credentials against a registry (POST /auth). */
  async login(auth: AuthConfig): Promise<void> {
    const server = (auth.serveraddress || DOCKER_HUB).replace(/^https?:\/\//, '').replace(/\/.*$/, '');
    const domain = server === 'index.docker.io' ? DOCKER_HUB : server;
    const ref: RemoteRef = { domain, path: '', local: '' };
    await new RegistryClient(ref, auth, this.opts, '').login();
  }

  /**
   * Resolves the reference before reporting anything, so an unknown tag or a refused login is an
   * HTTP error status rather than a message inside a 200 stream.
   */
  async pull(refStr: string, o: { platform?: string; auth?: AuthConfig }, progress: Progress): Promise<ImageRecord> {
    const ref = parseRemote(refStr);
    const display = `${ref.local}${ref.digest ? `@${ref.digest}` : `:${ref.tag}`}`;
    const want = parsePlatform(o.platform);
    const client = new RegistryClient(ref, o.auth, this.opts, 'pull');
    const top = await client.manifest(ref.digest ?? ref.tag!, display);
    let manifest = top;
    if (top.mediaType === MEDIA.dockerList || top.mediaType === MEDIA.ociIndex) {
      const list = JSON.parse(top.bytes.toString()) as ManifestDoc;
      const pick = (list.manifests ?? []).find((m) => m.platform && m.platform.os === want.os && m.platform.architecture === want.architecture
        && (!want.variant || m.platform.variant === want.variant));
      if (!pick) throw new NotFoundError(`no matching manifest for ${want.os}/${want.architecture}${want.variant ? `/${want.variant}` : ''} in the manifest list entries`);
      manifest = await client.manifest(pick.digest, display);
      if (manifest.mediaType !== MEDIA.dockerManifest && manifest.mediaType !== MEDIA.ociManifest) {
        throw new ApiError(500, `unsupported manifest media type ${manifest.mediaType} in the list for ${display}`);
      }
    } else if (top.mediaType === MEDIA.dockerSchema1 || top.mediaType === MEDIA.dockerSchema1Signed) {
      throw new ApiError(500, `${display}: Docker Image Format v1 and Docker Image manifest version 2, schema 1 are not supported: ask the publisher to push a v2 schema 2 or OCI image`);
    } else if (top.mediaType !== MEDIA.dockerManifest && top.mediaType !== MEDIA.ociManifest) {
      throw new ApiError(500, `unsupported manifest media type ${top.mediaType} for ${display}`);
    }
    const doc = JSON.parse(manifest.bytes.toString()) as ManifestDoc;
    if (!doc.config?.digest || !Array.isArray(doc.layers)) throw new ApiError(500, `manifest for ${display} has no config or layers`);
    for (const l of doc.layers) {
      if (/foreign|nondistributable/.test(l.mediaType)) throw new ApiError(500, `${display}: foreign (non-distributable) layers are not supported`);
    }

    progress({ status: `Pulling from ${ref.path}`, id: ref.tag ?? ref.digest });
    const configBytes = await this.blobBytes(client, doc.config);
    const config = JSON.parse(configBytes.toString()) as ImageConfigFile;
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== doc.layers.length) {
      throw new ApiError(500, `${display}: the config lists ${diffIds.length} layers, the manifest ${doc.layers.length}`);
    }
    const localTag = ref.tag ? formatRepoTag({ repo: ref.local, tag: ref.tag }) : undefined;
    const before = localTag ? this.store.find(localTag)?.id : undefined;

    this.pin(diffIds, 1);
    const installed: string[] = [];
    let pinned = true;
    try {
      const present = await Promise.all(diffIds.map((d) => this.store.hasLayer(d)));
      doc.layers.forEach((l, i) => progress({ status: present[i] ? 'Already exists' : 'Pulling fs layer', progressDetail: {}, id: shortDigest(l.digest) }));
      const todo = doc.layers.map((l, i) => ({ l, diffId: diffIds[i]! })).filter((_x, i) => !present[i]);
      todo.slice(PARALLEL).forEach(({ l }) => progress({ status: 'Waiting', progressDetail: {}, id: shortDigest(l.digest) }));
      const slots = new Slots(PARALLEL);
      await eachLimit(todo, todo.length, async ({ l, diffId }) => {
        const shared = this.inflight.get(diffId);
        if (shared) {
          await shared;
        } else {
          const p = this.fetchLayer(client, l, diffId, progress, slots);
          p.catch((e: unknown) => slots.fail(e));
          this.inflight.set(diffId, p);
          try { await p; installed.push(diffId); } finally { this.inflight.delete(diffId); }
        }
        progress({ status: 'Pull complete', progressDetail: {}, id: shortDigest(l.digest) });
      });
      const rec = await this.store.commitImage(configBytes, localTag ? [localTag] : [], [`${ref.local}@${top.digest}`]);
      progress({ status: `Digest: ${top.digest}` });
      const name = localTag ?? `${ref.local}@${top.digest}`;
      progress({ status: `Status: ${before === rec.id ? 'Image is up to date' : 'Downloaded newer image'} for ${name}` });
      return rec;
    } catch (e) {
      this.pin(diffIds, -1);
      pinned = false;
      // Nothing of a failed pull stays: layers it added that no image uses go again.
      await this.store.dropUnusedLayers(installed, (d) => this.pinned.has(d) || this.inflight.has(d)).catch(() => undefined);
      throw e;
    } finally {
      if (pinned) this.pin(diffIds, -1);
    }
  }

  /** A small blob (the config) read whole and verified. */
  private async blobBytes(client: RegistryClient, d: Descriptor): Promise<Buffer> {
    // A config is a few kB; a registry that claims more is not to be read into memory.
    if (d.size !== undefined && d.size > 8 << 20) throw new ApiError(500, `image config ${d.digest} is too large (${d.size} bytes)`);
    const res = await client.getBlob(d.digest);
    const bytes = Buffer.from(await res.arrayBuffer());
    if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== d.digest || (d.size !== undefined && bytes.length !== d.size)) {
      throw new ApiError(500, `image config verification failed for digest ${d.digest}`);
    }
    return bytes;
  }

  /**
   * Downloads one layer blob and unpacks it as it streams. The bytes go to
   * `downloads/<digest>`, which outlives a failed pull or a killed berthd (the next pull of that
   * blob replays it and asks for the rest with a Range request) and, once the digest and the
   * diff id check out, becomes the layer's stored blob: nothing is written twice.
   */
  private async fetchLayer(client: RegistryClient, l: Descriptor, diffId: string, progress: Progress, slots: Slots): Promise<void> {
    const id = shortDigest(l.digest);
    const release = await slots.take();
    const partial = this.store.downloadPath(l.digest);
    // Only an interrupted transfer is worth resuming; bad or used bytes go.
    let keep = true;
    let out: WriteStream | undefined;
    let unpack: StreamingLayer | undefined;
    let body: ReadableStreamDefaultReader<Uint8Array> | undefined;
    try {
      let have = await fs.stat(partial).then((st) => st.size, () => 0);
      if (l.size !== undefined && have >= l.size) have = 0;
      const res = await client.getBlob(l.digest, have > 0 ? have : undefined);
      if (!res.body) throw new ApiError(500, `empty response for blob ${l.digest}`);
      // A registry that ignores Range sends the whole blob (200): start over.
      if (res.status !== 206) have = 0;
      out = createWriteStream(partial, { mode: 0o600, flags: have > 0 ? 'a' : 'w' });
      const file = out;
      let fileErr: Error | undefined;
      // An error must also end a wait for 'drain', which would otherwise never come.
      file.on('error', (e) => { fileErr = e; file.emit('drain'); });
      // zstd/xz layers need an external decompressor and are unpacked after the download.
      if (!/zstd|xz|bzip2/.test(l.mediaType)) unpack = await this.store.beginLayerStream(diffId);
      const hash = createHash('sha256');
      let n = 0;
      const tick = throttled(progress, 'Downloading', id, l.size);
      const take = async (b: Buffer, fresh: boolean) => {
        n += b.length;
        if (l.size !== undefined && n > l.size) {
          keep = false;
          throw new ApiError(500, `filesystem layer verification failed for digest ${l.digest}: more than ${l.size} bytes`);
        }
        hash.update(b);
        if (fresh) {
          tick(n);
          if (!file.write(b)) await new Promise<void>((r) => file.once('drain', () => r()));
          if (fileErr) throw fileErr;
        }
        const wait = unpack?.write(b);
        if (wait) await wait;
      };
      if (have > 0) {
        for await (const c of createReadStream(partial, { end: have - 1, highWaterMark: 256 << 10 })) await take(c as Buffer, false);
      }
      // The web stream's own reader: Readable.fromWeb would add a stream hop per chunk.
      const reader = body = res.body.getReader();
      for (;;) {
        const r = await reader.read();
        if (r.done) break;
        await take(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength), true);
      }
      // Every byte on disk before the file is moved into the store or read by a later resume.
      await new Promise<void>((resolve) => file.end(resolve));
      if (fileErr) throw fileErr;
      release();
      tick(n, true);
      progress({ status: 'Verifying Checksum', progressDetail: {}, id });
      if (`sha256:${hash.digest('hex')}` !== l.digest || (l.size !== undefined && n !== l.size)) {
        keep = false;
        throw new ApiError(500, `filesystem layer verification failed for digest ${l.digest}`);
      }
      progress({ status: 'Download complete', progressDetail: {}, id });
      progress({ status: 'Extracting', progressDetail: { current: 0, total: l.size }, progress: '', id });
      keep = false;
      try {
        if (unpack) {
          await unpack.finish();
          await unpack.install(partial, { digest: l.digest, size: n });
        } else {
          await this.store.addLayer(partial, diffId);
        }
      } catch (e) {
        throw new ApiError(500, `failed to register layer ${id}: ${(e as Error).message}`);
      }
      progress({ status: 'Extracting', progressDetail: { current: l.size, total: l.size }, id });
    } finally {
      release();
      // A download abandoned on an error must not keep its connection open.
      await body?.cancel().catch(() => undefined);
      await unpack?.abort();
      if (out && !out.closed) await new Promise<void>((r) => { out!.once('close', () => r()); out!.end(); });
      if (!keep) await fs.rm(partial, { force: true });
    }
  }

  /**
   * Pushes one tag, or every local tag of the repository when tag is empty (as Docker does).
   * Layers go up gzip-compressed (deterministically, so a second push finds them by HEAD).
   */
  async push(name: string, tag: string | undefined, auth: AuthConfig | undefined, progress: Progress): Promise<void> {
    const base = parseReference(name);
    if (base.digest) throw new BadRequestError('cannot push a digest reference');
    const remote = parseRemote(base.repo);
    const tags = tag
      ? [tag]
      : [...new Set(this.store.list().flatMap((r) => r.repoTags).filter((t) => t.slice(0, t.lastIndexOf(':')) === base.repo).map((t) => t.slice(t.lastIndexOf(':') + 1)))].sort();
    const records = tags.map((t) => ({ t, rec: this.store.find(formatRepoTag({ repo: base.repo, tag: t })) }));
    if (records.length === 0 || records.some((r) => !r.rec)) throw new NotFoundError(`An image does not exist locally with the tag: ${base.repo}`);
    const client = new RegistryClient(remote, auth, this.opts, 'pull,push');
    await client.connect();
    progress({ status: `The push refers to repository [${fullName(remote)}]` });
    const blobs = new Map<string, Promise<PushBlob>>();
    try {
      for (const { t, rec } of records) await this.pushOne(client, t, rec!, blobs, progress);
    } finally {
      for (const b of blobs.values()) await b.then((x) => (x.scratch ? fs.rm(x.path, { force: true }) : undefined), () => undefined);
    }
  }

  private async pushOne(client: RegistryClient, tag: string, rec: ImageRecord, blobs: Map<string, Promise<PushBlob>>, progress: Progress): Promise<void> {
    const diffIds = rec.config.rootfs.diff_ids;
    for (const d of [...diffIds].reverse()) progress({ status: 'Preparing', progressDetail: {}, id: shortDigest(d) });
    const layers = await eachLimit(diffIds, PARALLEL, async (diffId) => {
      const id = shortDigest(diffId);
      let b = blobs.get(diffId);
      if (!b) { b = this.compress(diffId); blobs.set(diffId, b); }
      const blob = await b;
      if (await client.blobExists(blob.digest)) {
        progress({ status: 'Layer already exists', progressDetail: {}, id });
      } else {
        const tick = throttled(progress, 'Pushing', id, blob.size);
        let n = 0;
        async function* body() {
          for await (const chunk of createReadStream(blob.path)) {
            n += (chunk as Buffer).length;
            tick(n);
            yield chunk as Buffer;
          }
        }
        await client.uploadBlob(blob.digest, blob.size, body());
        tick(n, true);
        progress({ status: 'Pushed', progressDetail: {}, id });
      }
      return { mediaType: MEDIA.dockerLayerGzip, size: blob.size, digest: blob.digest };
    });
    const configBytes = await this.store.configBytes(rec);
    const configDigest = `sha256:${createHash('sha256').update(configBytes).digest('hex')}`;
    if (!(await client.blobExists(configDigest))) await client.uploadBlob(configDigest, configBytes.length, configBytes);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MEDIA.dockerManifest,
      config: { mediaType: MEDIA.dockerConfig, size: configBytes.length, digest: configDigest },
      layers,
    }, null, 3));
    const digest = await client.putManifest(tag, MEDIA.dockerManifest, manifest);
    progress({ status: `${tag}: digest: ${digest} size: ${manifest.length}` });
    progress({ progressDetail: {}, aux: { Tag: tag, Digest: digest, Size: manifest.length } });
    await this.store.commitImage(configBytes, [], [`${client.ref.local}@${digest}`]);
  }

  /**
   * The gzip blob to push: a pulled layer's own blob as stored (the registry it came from had
   * these very bytes), otherwise a gzip of the layer's tarball into a scratch file.
   */
  private async compress(diffId: string): Promise<PushBlob> {
    const stored = await this.store.layerBlob(diffId);
    if (stored) return { ...stored, scratch: false };
    const path = this.store.scratchPath('push');
    const hash = createHash('sha256');
    let size = 0;
    const tap = new Transform({ transform(chunk: Buffer, _e, cb) { hash.update(chunk); size += chunk.length; cb(null, chunk); } });
    await pipeline(this.store.layerTar(diffId), createGzip(), tap, createWriteStream(path, { mode: 0o600 }));
    return { path, digest: `sha256:${hash.digest('hex')}`, size, scratch: true };
  }
}
