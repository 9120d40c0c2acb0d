import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BadRequestError, ConflictError, NotFoundError } from '../util/errors.js';
import { untar } from '../util/untar.js';
import { sha256Hex, shortId } from '../util/ids.js';
import { readJson, writeJsonAtomic } from '../store/atomic.js';
import { applyChanges } from './changes.js';
import { LayerStore, type StreamingLayer } from './layers.js';
import { formatRepoTag, parseReference } from './reference.js';
import { loadArchive, writeDockerArchive } from './archive.js';
import type { ImageConfigFile, ImageRecord, ImageStore, ImageUser, RemovedImageItem } from './types.js';

interface IndexFile {
  /** "repo:tag" → image id */
  tags: Record<string, string>;
  images: Record<string, { added: string; repoDigests: string[]; parent?: string }>;
  /** Build cache: step key → the image that step made (the classic builder's cache). */
  buildCache?: Record<string, string>;
}

import { goArch } from './platform.js';
export { goArch };

/**
 * The local image store: image configs by id, content-addressed layers, and an index of tags.
 * Blobs are written first and the index last, atomically, so a crash at any point leaves either
 * the old index or the new one; init() removes whatever the index does not reference.
 */
export class LocalImageStore implements ImageStore {
  private readonly layers: LayerStore;
  private readonly configDir: string;
  private readonly tmpDir: string;
  private readonly indexPath: string;
  private index: IndexFile = { tags: {}, images: {} };
  private readonly records = new Map<string, ImageRecord>();
  /** Serialises index changes: two loads at once must not lose each other's tags. */
  private writing: Promise<unknown> = Promise.resolve();

  constructor(private readonly rootDir: string) {
    this.layers = new LayerStore(join(rootDir, 'layers'), join(rootDir, 'tmp'));
    this.configDir = join(rootDir, 'configs');
    this.tmpDir = join(rootDir, 'tmp');
    this.indexPath = join(rootDir, 'index.json');
  }

  async init(): Promise<void> {
    for (const d of [this.rootDir, join(this.rootDir, 'layers'), this.configDir, join(this.rootDir, 'downloads')]) await fs.mkdir(d, { recursive: true, mode: 0o700 });
    // Partial downloads are kept for resuming a pull, but not forever.
    for (const f of await fs.readdir(join(this.rootDir, 'downloads'))) {
      const p = join(this.rootDir, 'downloads', f);
      const st = await fs.stat(p).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > 24 * 3600_000) await fs.rm(p, { force: true });
    }
    await fs.rm(this.tmpDir, { recursive: true, force: true });
    await fs.mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
    this.index = (await readJson<IndexFile>(this.indexPath)) ?? { tags: {}, images: {} };
    for (const id of Object.keys(this.index.images)) {
      const cfg = await readJson<ImageConfigFile>(join(this.configDir, `${id.slice(7)}.json`));
      if (!cfg) { delete this.index.images[id]; continue; }
      await this.remember(id, cfg);
    }
    for (const [tag, id] of Object.entries(this.index.tags)) if (!this.index.images[id]) delete this.index.tags[tag];
    for (const [k, id] of Object.entries(this.index.buildCache ?? {})) if (!this.index.images[id]) delete this.index.buildCache![k];
    // Anything on disk the index does not reference is a leftover of an interrupted write.
    const wantedLayers = new Set([...this.records.values()].flatMap((r) => r.config.rootfs.diff_ids));
    for (const l of await this.layers.list()) if (!wantedLayers.has(l)) await this.layers.remove(l);
    for (const f of await fs.readdir(this.configDir)) {
      if (!this.index.images[`sha256:${f.replace(/\.json$/, '')}`]) await fs.rm(join(this.configDir, f), { force: true });
    }
  }

  private async remember(id: string, config: ImageConfigFile): Promise<void> {
    let size = 0;
    for (const l of config.rootfs.diff_ids) size += await this.layers.size(l);
    const meta = this.index.images[id]!;
    this.records.set(id, {
      id, config, size, added: meta.added, repoDigests: meta.repoDigests,
      repoTags: Object.entries(this.index.tags).filter(([, v]) => v === id).map(([k]) => k).sort(),
    });
  }

  private refreshTags(): void {
    for (const r of this.records.values()) {
      r.repoTags = Object.entries(this.index.tags).filter(([, v]) => v === r.id).map(([k]) => k).sort();
    }
  }

  private async saveIndex(): Promise<void> {
    await writeJsonAtomic(this.indexPath, this.index);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.writing.then(fn, fn);
    this.writing = next.catch(() => undefined);
    return next;
  }

  list(): ImageRecord[] {
    return [...this.records.values()];
  }

  find(ref: string): ImageRecord | undefined {
    if (ref.startsWith('sha256:')) {
      const hex = ref.slice(7);
      if (!/^[0-9a-f]+$/.test(hex)) throw new BadRequestError(`invalid reference format: ${ref}`);
      return this.byIdPrefix(hex);
    }
    if (/^[0-9a-f]{64}$/.test(ref)) return this.records.get(`sha256:${ref}`);
    let parsed;
    try {
      parsed = parseReference(ref);
    } catch (e) {
      if (/^[0-9a-f]+$/i.test(ref)) return this.byIdPrefix(ref);
      throw e;
    }
    if (parsed.digest) {
      return [...this.records.values()].find((r) => r.repoDigests.includes(`${parsed.repo}@${parsed.digest}`) || r.id === parsed.digest);
    }
    const id = this.index.tags[formatRepoTag(parsed)];
    if (id) return this.records.get(id);
    // A short hex string that names no repository is an id prefix, as in Docker.
    if (/^[0-9a-f]{3,}$/.test(ref)) return this.byIdPrefix(ref);
    return undefined;
  }

  private byIdPrefix(hex: string): ImageRecord | undefined {
    const matches = [...this.records.values()].filter((r) => r.id.slice(7).startsWith(hex));
    if (matches.length > 1) throw new BadRequestError(`ambiguous image reference ${hex}: it matches ${matches.length} images`);
    return matches[0];
  }

  get(ref: string): ImageRecord {
    const r = this.find(ref);
    if (!r) throw new NotFoundError(`No such image: ${withDefaultTag(ref)}`);
    return r;
  }

  /** Stores a config and its (already stored) layers as an image, and tags it. */
  async commitImage(configBytes: Buffer, tags: string[], repoDigests: string[] = []): Promise<ImageRecord> {
    const id = `sha256:${sha256Hex(configBytes)}`;
    const config = JSON.parse(configBytes.toString()) as ImageConfigFile;
    if (!config.rootfs || !Array.isArray(config.rootfs.diff_ids)) throw new BadRequestError('invalid image config: no rootfs.diff_ids');
    for (const l of config.rootfs.diff_ids) {
      if (!(await this.layers.has(l))) throw new BadRequestError(`image config references missing layer ${l}`);
    }
    return this.serial(async () => {
      const cfgPath = join(this.configDir, `${id.slice(7)}.json`);
      await fs.writeFile(`${cfgPath}.tmp`, configBytes);
      await fs.rename(`${cfgPath}.tmp`, cfgPath);
      const existing = this.index.images[id];
      this.index.images[id] = { added: existing?.added ?? new Date().toISOString(), repoDigests: [...new Set([...(existing?.repoDigests ?? []), ...repoDigests])] };
      for (const t of tags) this.index.tags[formatRepoTag(parseReference(t))] = id;
      await this.saveIndex();
      await this.remember(id, config);
      this.refreshTags();
      return this.records.get(id)!;
    });
  }

  async importRootfs(tar: Readable, opts: { repoTag?: string; changes?: string[]; message?: string; platform?: string }): Promise<ImageRecord> {
    if (opts.repoTag) parseReference(opts.repoTag);
    const runtimeConfig = applyChanges({}, opts.changes ?? []);
    const spooled = await this.layers.spool(tar);
    try {
      const diffId = await this.layers.addFromFile(spooled);
      const created = new Date().toISOString();
      const config: ImageConfigFile = {
        architecture: goArch(), os: 'linux', created, config: runtimeConfig,
        rootfs: { type: 'layers', diff_ids: [diffId] },
        history: [{ created, created_by: '', comment: opts.message || 'Imported from -' }],
      };
      if (opts.message) config.comment = opts.message;
      return await this.commitImage(Buffer.from(JSON.stringify(config)), opts.repoTag ? [opts.repoTag] : []);
    } finally {
      await fs.rm(spooled, { force: true });
    }
  }

  async load(tar: Readable): Promise<string[]> {
    const dir = join(this.tmpDir, `load-${Math.random().toString(36).slice(2)}`);
    await fs.mkdir(dir, { recursive: true });
    try {
      const spooled = await this.layers.spool(tar);
      try {
        await untar(spooled, dir, ['--no-same-owner']);
      } catch (e) {
        if (!(e instanceof BadRequestError)) throw e;
        throw new BadRequestError(`invalid image archive: ${e.message.replace(/^invalid tar archive: /, '')}`);
      } finally {
        await fs.rm(spooled, { force: true });
      }
      const images = await loadArchive(dir, (path, expected) => this.layers.addFromFile(path, expected));
      const lines: string[] = [];
      for (const img of images) {
        const rec = await this.commitImage(img.config, img.tags);
        if (img.tags.length) for (const t of img.tags) lines.push(`Loaded image: ${formatRepoTag(parseReference(t))}`);
        else lines.push(`Loaded image ID: ${rec.id}`);
      }
      return lines;
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  async save(refs: string[], out: Writable): Promise<void> {
    const wanted = refs.map((r) => ({ ref: r, rec: this.get(r) }));
    const dir = join(this.tmpDir, `save-${Math.random().toString(36).slice(2)}`);
    try {
      await writeDockerArchive(dir, wanted.map(({ ref, rec }) => {
        const tagged = rec.repoTags.includes(safeRepoTag(ref)) ? [safeRepoTag(ref)] : this.find(ref) && !/^(sha256:)?[0-9a-f]+$/.test(ref) ? [safeRepoTag(ref)] : [];
        return {
          id: rec.id,
          configPath: join(this.configDir, `${rec.id.slice(7)}.json`),
          tags: tagged,
          layers: rec.config.rootfs.diff_ids.map((d) => ({ diffId: d, writeTar: (dest: string) => this.layers.exportTar(d, dest) })),
        };
      }));
      const { spawn } = await import('node:child_process');
      const child = spawn('tar', ['-cf', '-', '-C', dir, '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const done = new Promise<number>((r) => child.on('close', (c) => r(c ?? 1)));
      await pipeline(child.stdout, out, { end: false });
      if ((await done) !== 0) throw new Error('tar failed writing the archive');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  async tag(ref: string, repo: string, tag?: string): Promise<void> {
    const rec = this.get(ref);
    const target = formatRepoTag(parseReference(tag ? `${repo}:${tag}` : repo));
    await this.serial(async () => {
      this.index.tags[target] = rec.id;
      await this.saveIndex();
      this.refreshTags();
    });
  }

  async remove(ref: string, opts: { force?: boolean; noprune?: boolean }, isUsed: (imageId: string) => ImageUser | undefined): Promise<RemovedImageItem[]> {
    const rec = this.get(ref);
    const byId = /^(sha256:)?[0-9a-f]+$/.test(ref) && rec.id.slice(7).startsWith(ref.replace(/^sha256:/, '')) && !this.index.tags[safeRepoTag(ref)];
    const items: RemovedImageItem[] = [];
    const conflict = (hard: boolean, why: string) => new ConflictError(`conflict: unable to delete ${shortId(rec.id)} (${hard ? 'cannot be forced' : 'must be forced'}) - ${why}`);
    return this.serial(async () => {
      const user = isUsed(rec.id);
      const hasChildren = this.childrenOf(rec.id).length > 0;
      if (!byId) {
        const tag = safeRepoTag(ref);
        if (rec.repoTags.length === 1 && user && !opts.force) {
          throw new ConflictError(`conflict: unable to remove repository reference "${ref}" (must force) - container ${shortId(user.id)} is using its referenced image ${shortId(rec.id)}`);
        }
        delete this.index.tags[tag];
        items.push({ Untagged: tag });
        // Docker then deletes the image quietly, unless another tag, a container or a child image
        // still needs it: then only the tag goes (a built image's parent stays, hidden).
        if (rec.repoTags.length > 1 || user || hasChildren) {
          await this.saveIndex();
          this.refreshTags();
          return items;
        }
      } else {
        // checkImageDeleteConflict's order: hard conflicts first, then the soft ones force skips.
        if (hasChildren) throw conflict(true, 'image has dependent child images');
        if (user?.running) throw conflict(true, `image is being used by running container ${shortId(user.id)}`);
        if (rec.repoTags.length > 1 && !opts.force) throw conflict(false, 'image is referenced in multiple repositories');
        if (user && !opts.force) throw conflict(false, `image is being used by stopped container ${shortId(user.id)}`);
        for (const t of rec.repoTags) {
          delete this.index.tags[t];
          items.push({ Untagged: t });
        }
        if (user) {
          await this.saveIndex();
          this.refreshTags();
          return items;
        }
      }
      const parent = this.index.images[rec.id]?.parent;
      items.push(...(await this.deleteImage(rec)));
      if (!opts.noprune) items.push(...(await this.deleteDanglingParents(parent, isUsed)));
      return items;
    });
  }

  /** Built images whose recorded parent is this one. */
  private childrenOf(id: string): string[] {
    return Object.entries(this.index.images).filter(([, m]) => m.parent === id).map(([child]) => child);
  }

  /**
   * As Docker's rmi (prune unless --no-prune): parents left untagged, childless and unused by any
   * container go with the image, up the chain. Call inside serial().
   */
  private async deleteDanglingParents(parent: string | undefined, isUsed: (imageId: string) => ImageUser | undefined): Promise<RemovedImageItem[]> {
    const out: RemovedImageItem[] = [];
    for (let id = parent; id;) {
      const p = this.records.get(id);
      if (!p || p.repoTags.length > 0 || this.childrenOf(id).length > 0 || isUsed(id)) break;
      id = this.index.images[p.id]?.parent;
      out.push(...(await this.deleteImage(p)));
    }
    return out;
  }

  /** Deletes an untagged image and the layers no other image uses. Call inside serial(). */
  private async deleteImage(rec: ImageRecord): Promise<RemovedImageItem[]> {
    delete this.index.images[rec.id];
    for (const [k, id] of Object.entries(this.index.buildCache ?? {})) if (id === rec.id) delete this.index.buildCache![k];
    for (const [t, id] of Object.entries(this.index.tags)) if (id === rec.id) delete this.index.tags[t];
    await this.saveIndex();
    this.records.delete(rec.id);
    this.refreshTags();
    await fs.rm(join(this.configDir, `${rec.id.slice(7)}.json`), { force: true });
    const stillUsed = new Set([...this.records.values()].flatMap((r) => r.config.rootfs.diff_ids));
    const out: RemovedImageItem[] = [{ Deleted: rec.id }];
    for (const l of rec.config.rootfs.diff_ids) {
      if (stillUsed.has(l)) continue;
      await this.layers.remove(l);
      out.push({ Deleted: l });
    }
    return out;
  }

  async prune(opts: { all?: boolean }, isUsed: (imageId: string) => ImageUser | undefined): Promise<{ ImagesDeleted: RemovedImageItem[]; SpaceReclaimed: number }> {
    return this.serial(async () => {
      const deleted: RemovedImageItem[] = [];
      let reclaimed = 0;
      for (const rec of [...this.records.values()]) {
        // Deleted already as a dangling parent of an earlier one.
        if (!this.records.has(rec.id)) continue;
        if (isUsed(rec.id)) continue;
        if (!opts.all && rec.repoTags.length > 0) continue;
        // Only images without children (Docker's imageStore.Heads()): a built image's parent goes
        // with its last child, below.
        if (this.childrenOf(rec.id).length > 0) continue;
        for (const t of rec.repoTags) deleted.push({ Untagged: t });
        reclaimed += rec.size;
        const parent = this.index.images[rec.id]?.parent;
        deleted.push(...(await this.deleteImage(rec)));
        deleted.push(...(await this.deleteDanglingParents(parent, isUsed)));
      }
      return { ImagesDeleted: deleted, SpaceReclaimed: reclaimed };
    });
  }

  layerDirs(image: ImageRecord): string[] {
    return [...image.config.rootfs.diff_ids].reverse().map((d) => this.layers.rootPath(d));
  }

  private created(rec: ImageRecord): string {
    return rec.config.created ?? rec.added;
  }

  inspect(rec: ImageRecord): object {
    const dirs = this.layerDirs(rec);
    return {
      Id: rec.id,
      RepoTags: rec.repoTags,
      RepoDigests: rec.repoDigests,
      Parent: this.index.images[rec.id]?.parent ?? '',
      Comment: rec.config.comment ?? '',
      Created: this.created(rec),
      Container: '',
      ContainerConfig: rec.config.container_config ?? emptyConfig(),
      DockerVersion: '',
      Author: rec.config.author ?? '',
      Config: { ...emptyConfig(), ...(rec.config.config ?? {}) },
      Architecture: rec.config.architecture,
      Os: rec.config.os,
      Size: rec.size,
      VirtualSize: rec.size,
      GraphDriver: { Name: 'overlay2', Data: { LowerDir: dirs.join(':'), MergedDir: '', UpperDir: '', WorkDir: '' } },
      RootFS: { Type: 'layers', Layers: rec.config.rootfs.diff_ids },
      Metadata: { LastTagTime: rec.added },
    };
  }

  /** Without all, untagged images that are a built image's parent are hidden, as Docker hides intermediate images. */
  summaries(all = true): object[] {
    const parents = new Set(Object.values(this.index.images).map((m) => m.parent).filter(Boolean));
    return [...this.records.values()].filter((r) => all || r.repoTags.length > 0 || !parents.has(r.id)).sort((a, b) => this.created(b).localeCompare(this.created(a))).map((rec) => ({
      Id: rec.id,
      ParentId: '',
      RepoTags: rec.repoTags.length ? rec.repoTags : ['<none>:<none>'],
      RepoDigests: rec.repoDigests.length ? rec.repoDigests : rec.repoTags.length ? [] : ['<none>@<none>'],
      Created: Math.floor(Date.parse(this.created(rec)) / 1000),
      Size: rec.size,
      VirtualSize: rec.size,
      SharedSize: -1,
      Labels: rec.config.config?.Labels ?? null,
      Containers: -1,
    }));
  }

  /** What the registry client needs: layers by diff id, a scratch directory, the stored config bytes. */
  hasLayer(diffId: string): Promise<boolean> { return this.layers.has(diffId); }
  /** Adds a (compressed) layer file; throws, storing nothing, when its content is not expectedDiffId. */
  addLayer(path: string, expectedDiffId?: string): Promise<string> { return this.layers.addFromFile(path, expectedDiffId); }
  /** Starts unpacking a gzip/plain layer that is still downloading; see StreamingLayer. */
  beginLayerStream(expectedDiffId: string): Promise<StreamingLayer> { return this.layers.beginStream(expectedDiffId); }
  /** A pulled layer's compressed blob as the registry served it, if the store keeps one. */
  layerBlob(diffId: string): Promise<{ path: string; digest: string; size: number } | undefined> { return this.layers.compressedBlob(diffId); }
  scratchPath(prefix: string): string { return join(this.tmpDir, `${prefix}-${process.pid}-${Math.random().toString(36).slice(2)}`); }
  /** Where a blob download lives until it is complete; init() keeps these so pulls can resume. */
  downloadPath(digest: string): string { return join(this.rootDir, 'downloads', digest.replace(/^sha256:/, '')); }
  configBytes(rec: ImageRecord): Promise<Buffer> { return fs.readFile(join(this.configDir, `${rec.id.slice(7)}.json`)); }

  /** Records a build step's image: its parent (which hides the parent as intermediate) and cache key. */
  async recordBuildStep(id: string, parent: string | undefined, key: string): Promise<void> {
    await this.serial(async () => {
      const meta = this.index.images[id];
      if (!meta) return;
      if (parent && parent !== id) meta.parent ??= parent;
      (this.index.buildCache ??= {})[key] = id;
      await this.saveIndex();
    });
  }

  buildCacheLookup(key: string): ImageRecord | undefined {
    const id = this.index.buildCache?.[key];
    return id ? this.records.get(id) : undefined;
  }

  /** Removes layers that an aborted pull installed, unless an image (or keep) still needs them. */
  async dropUnusedLayers(diffIds: string[], keep: (diffId: string) => boolean): Promise<void> {
    await this.serial(async () => {
      const used = new Set([...this.records.values()].flatMap((r) => r.config.rootfs.diff_ids));
      for (const l of diffIds) if (!used.has(l) && !keep(l)) await this.layers.remove(l);
    });
  }

  /** A layer's exact uncompressed tarball (the bytes its diff id is the digest of). */
  layerTar(diffId: string): Readable {
    return this.layers.tarStream(diffId);
  }
}

function safeRepoTag(ref: string): string {
  try { return formatRepoTag(parseReference(ref)); } catch { return ref; }
}

function emptyConfig(): object {
  return {
    Hostname: '', Domainname: '', User: '', AttachStdin: false, AttachStdout: false, AttachStderr: false,
    Tty: false, OpenStdin: false, StdinOnce: false, Env: null, Cmd: null, Image: '', Volumes: null,
    WorkingDir: '', Entrypoint: null, OnBuild: null, Labels: null,
  };
}

/**
 * A reference as Docker names it in "No such image" (reference.TagNameOnly): a name without tag
 * or digest gets ":latest"; ids and id prefixes stay as given.
 */
function withDefaultTag(ref: string): string {
  if (ref.startsWith('sha256:') || /^[0-9a-f]{3,64}$/.test(ref) || ref.includes('@')) return ref;
  const last = ref.slice(ref.lastIndexOf('/') + 1);
  return last.includes(':') ? ref : `${ref}:latest`;
}
