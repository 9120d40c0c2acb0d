import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs, type WriteStream } from 'node:fs';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { ApiError, BadRequestError, NotFoundError } from '../../util/errors.js';
import { formatRepoTag, parseReference } from '../reference.js';
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
      await eachLimit(todo, PARALLEL, async ({ l, diffId }) => {
        const shared = this.inflight.get(diffId);
        if (shared) {
          await shared;
        } else {
          const p = this.fetchLayer(client, l, diffId, progress);
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
   * Downloads one layer blob while hashing it, then unpacks it into the store. The download goes to
   * `downloads/<digest>.partial`, which outlives a failed pull or a killed berthd: the next pull
   * of that blob asks for the rest with a Range request instead of starting over.
   */
  private async fetchLayer(client: RegistryClient, l: Descriptor, diffId: string, progress: Progress): Promise<void> {
    const id = shortDigest(l.digest);
    const partial = this.store.downloadPath(l.digest);
    let keep = true;
    let out: WriteStream | undefined;
    try {
      let have = await fs.stat(partial).then((st) => st.size, () => 0);
      if (l.size !== undefined && have >= l.size) have = 0;
      const res = await client.getBlob(l.digest, have > 0 ? have : undefined);
      if (!res.body) throw new ApiError(500, `empty response for blob ${l.digest}`);
      // A registry that ignores Range sends the whole blob (200): start over.
      if (res.status !== 206) have = 0;
      out = createWriteStream(partial, { mode: 0o600, flags: have > 0 ? 'a' : 'w' });
      const sink = out;
      const body = Readable.fromWeb(res.body as never);
      // What we had, then the rest as it arrives (also appended to the partial file for a later resume).
      async function* blob(): AsyncGenerator<Buffer> {
        if (have > 0) for await (const c of createReadStream(partial, { end: have - 1 })) yield c as Buffer;
        for await (const c of body) {
          const b = c as Buffer;
          if (!sink.write(b)) await new Promise<void>((r) => sink.once("drain", () => r()));
          yield b;
        }
      }
      const hash = createHash('sha256');
      let n = 0;
      const tick = throttled(progress, 'Downloading', id, l.size);
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          n += chunk.length;
          if (l.size !== undefined && n > l.size) { cb(new ApiError(500, `filesystem layer verification failed for digest ${l.digest}: more than ${l.size} bytes`)); return; }
          hash.update(chunk);
          if (n > have) tick(n);
          cb(null, chunk);
        },
      });
      let checked: boolean | undefined;
      const digestOk = () => (checked ??= `sha256:${hash.digest('hex')}` === l.digest && (l.size === undefined || n === l.size));
      const mismatch = () => new ApiError(500, `filesystem layer verification failed for digest ${l.digest}`);
      const verify = () => {
        tick(n, true);
        progress({ status: 'Verifying Checksum', progressDetail: {}, id });
        if (!digestOk()) { keep = false; throw mismatch(); }
        progress({ status: 'Download complete', progressDetail: {}, id });
        progress({ status: 'Extracting', progressDetail: { current: 0, total: l.size }, progress: '', id });
      };
      // pipe() does not pass errors on, so a cut download is forwarded by hand.
      const raw = Readable.from(blob());
      raw.on('error', (e) => counter.destroy(e));
      const source = raw.pipe(counter);
      if (!/zstd|xz|bzip2/.test(l.mediaType)) {
        // gzip and plain layers unpack while they download. pipe(), not pipeline(): if unpacking
        // fails, the download goes on to its end so the blob's digest can still say what was wrong.
        const forUnpack = new PassThrough();
        source.on('error', (e) => forUnpack.destroy(e));
        source.pipe(forUnpack);
        try {
          await this.store.addLayerStream(forUnpack, diffId, verify);
        } catch (e) {
          if (e instanceof ApiError) throw e;
          source.unpipe(forUnpack);
          const ended = source.readableEnded || (!source.destroyed && await new Promise<boolean>((r) => {
            source.once('end', () => r(true));
            source.once('error', () => r(false));
            source.resume();
          }));
          if (!ended) throw new ApiError(500, `download of ${l.digest} was interrupted: ${(e as Error).message}`);
          keep = false;
          if (!digestOk()) throw mismatch();
          throw new ApiError(500, `failed to register layer ${id}: ${(e as Error).message}`);
        }
        keep = false;
      } else {
        for await (const _ of source) { /* drained into the partial file */ }
        await new Promise<void>((r) => sink.end(r));
        verify();
        keep = false;
        try {
          await this.store.addLayer(partial, diffId);
        } catch (e) {
          throw new ApiError(500, `failed to register layer ${id}: ${(e as Error).message}`);
        }
      }
      progress({ status: 'Extracting', progressDetail: { current: l.size, total: l.size }, id });
    } finally {
      if (out && !out.closed) await new Promise<void>((r) => { out!.once('close', () => r()); out!.end(); });
      // Only an interrupted transfer is worth resuming; bad or used bytes go.
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
    const blobs = new Map<string, Promise<{ path: string; digest: string; size: number }>>();
    try {
      for (const { t, rec } of records) await this.pushOne(client, t, rec!, blobs, progress);
    } finally {
      for (const b of blobs.values()) await b.then((x) => fs.rm(x.path, { force: true }), () => undefined);
    }
  }

  private async pushOne(client: RegistryClient, tag: string, rec: ImageRecord, blobs: Map<string, Promise<{ path: string; digest: string; size: number }>>, progress: Progress): Promise<void> {
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

  /** gzip of the stored layer tarball into a scratch file, hashed on the way. */
  private async compress(diffId: string): Promise<{ path: string; digest: string; size: number }> {
    const path = this.store.scratchPath('push');
    const hash = createHash('sha256');
    let size = 0;
    const tap = new Transform({ transform(chunk: Buffer, _e, cb) { hash.update(chunk); size += chunk.length; cb(null, chunk); } });
    await pipeline(createReadStream(this.store.layerTarPath(diffId)), createGzip(), tap, createWriteStream(path, { mode: 0o600 }));
    return { path, digest: `sha256:${hash.digest('hex')}`, size };
  }
}
