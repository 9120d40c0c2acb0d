import { constants, promises as fs } from 'node:fs';
import { join, normalize } from 'node:path';
import { BadRequestError } from '../util/errors.js';
import { sha256Hex } from '../util/ids.js';
import { fileDigest } from './layers.js';
import type { ImageConfigFile } from './types.js';
import { goArch } from './platform.js';

export interface LoadedImage { config: Buffer; tags: string[] }
type AddLayer = (path: string, expectedDiffId?: string) => Promise<string>;

/** A path taken from an archive's own metadata must stay inside the unpacked archive. */
function inside(dir: string, rel: string): string {
  if (typeof rel !== 'string') throw new BadRequestError('invalid image archive: a path in its metadata is not a string');
  const p = normalize(join(dir, rel));
  if (!p.startsWith(dir + '/')) throw new BadRequestError(`invalid image archive: path ${rel} escapes the archive`);
  return p;
}

/**
 * The file an archive's entry really is, never a host file. An archive may hold symlinks (Docker's
 * own `docker save` links a duplicate layer's directory to the first one), so they are followed,
 * but the end of the chain must lie inside the unpacked archive: a link to /etc/passwd, or through
 * `..` out of it, is refused before a byte is read. The directory is berthd's private staging
 * directory and nothing changes it after tar, so the resolved path stays what was checked; reads
 * still use O_NOFOLLOW (`readInside`), so a last component swapped for a link would fail.
 * The refusal names the entry, never what it points at or holds.
 */
async function resolveInside(dir: string, rel: string): Promise<string> {
  const p = inside(dir, rel);
  const root = await fs.realpath(dir);
  let real: string;
  try {
    real = await fs.realpath(p);
  } catch {
    throw new BadRequestError(`invalid image archive: missing ${rel}`);
  }
  if (!real.startsWith(root + '/')) throw new BadRequestError(`invalid image archive: ${rel} is a link to outside the archive`);
  const st = await fs.lstat(real);
  if (!st.isFile()) throw new BadRequestError(`invalid image archive: ${rel} is not a regular file`);
  return real;
}

/**
 * The largest metadata file (manifest.json, index.json, an image config, an OCI manifest) berthd
 * reads into memory. Layers stream from disk at any size; these are parsed whole, so a 100 MB
 * manifest.json was held as a buffer and a string at once. Real ones are kilobytes (a registry
 * refuses manifests over 4 MB); a config with a long history stays far below this.
 */
export const METADATA_LIMIT = 8 * 1024 * 1024;

/** Reads an entry of the archive (see resolveInside): never a file outside it, never one past METADATA_LIMIT. */
async function readInside(dir: string, rel: string): Promise<Buffer> {
  const real = await resolveInside(dir, rel);
  const fh = await fs.open(real, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const { size } = await fh.stat();
    if (size > METADATA_LIMIT) throw new BadRequestError(`invalid image archive: ${rel} is too large (${size} bytes): metadata can be at most ${METADATA_LIMIT} bytes`);
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/** JSON of the archive's own; the error says which entry, never its text (it could be anything). */
function parseJson<T>(bytes: Buffer, what: string): T {
  try {
    return JSON.parse(bytes.toString()) as T;
  } catch {
    throw new BadRequestError(`invalid image archive: ${what} is not valid JSON`);
  }
}

async function readJsonFile<T>(dir: string, rel: string): Promise<T> {
  return parseJson<T>(await readInside(dir, rel), rel);
}

/** Whether the archive has an entry of that name (a dangling or escaping link counts: reading it is refused later). */
async function exists(dir: string, rel: string): Promise<boolean> {
  try { await fs.lstat(join(dir, rel)); return true; } catch { return false; }
}

/**
 * Reads an unpacked `docker save` archive (manifest.json) or OCI image layout (index.json),
 * verifying every digest, and stores its layers. Returns the image configs to commit; the caller
 * commits them only after every layer is in, so a bad archive stores no image.
 */
export async function loadArchive(dir: string, addLayer: AddLayer): Promise<LoadedImage[]> {
  if (await exists(dir, 'manifest.json')) return loadDockerArchive(dir, addLayer);
  if (await exists(dir, 'index.json')) return loadOciLayout(dir, addLayer);
  throw new BadRequestError('invalid image archive: neither manifest.json nor index.json found');
}

async function storeLayers(config: ImageConfigFile, layerFiles: string[], addLayer: AddLayer, verifyBlob?: string[]): Promise<void> {
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== layerFiles.length) {
    throw new BadRequestError(`invalid image archive: config lists ${diffIds.length} layers, manifest ${layerFiles.length}`);
  }
  for (let i = 0; i < layerFiles.length; i++) {
    if (verifyBlob?.[i]) {
      const got = await fileDigest(layerFiles[i]!);
      if (got !== verifyBlob[i]) throw new BadRequestError(`invalid image archive: blob digest mismatch: expected ${verifyBlob[i]}, got ${got}`);
    }
    try {
      await addLayer(layerFiles[i]!, diffIds[i]);
    } catch (e) {
      throw new BadRequestError(`invalid image archive: ${(e as Error).message}`);
    }
  }
}

async function loadDockerArchive(dir: string, addLayer: AddLayer): Promise<LoadedImage[]> {
  const manifest = await readJsonFile<Array<{ Config: string; RepoTags?: string[] | null; Layers: string[] }>>(dir, 'manifest.json');
  if (!Array.isArray(manifest)) throw new BadRequestError('invalid image archive: manifest.json is not a list');
  const out: LoadedImage[] = [];
  for (const entry of manifest) {
    if (!entry || typeof entry.Config !== 'string' || !Array.isArray(entry.Layers)) throw new BadRequestError('invalid image archive: a manifest.json entry lacks Config or Layers');
    const configBytes = await readInside(dir, entry.Config);
    // Newer archives name the config by its digest: check it when they do.
    const m = /([0-9a-f]{64})(\.json)?$/.exec(entry.Config);
    if (m && sha256Hex(configBytes) !== m[1]) throw new BadRequestError(`invalid image archive: config digest mismatch for ${entry.Config}`);
    const config = parseJson<ImageConfigFile>(configBytes, entry.Config);
    const layers: string[] = [];
    for (const l of entry.Layers) layers.push(await resolveInside(dir, l));
    await storeLayers(config, layers, addLayer);
    out.push({ config: configBytes, tags: entry.RepoTags ?? [] });
  }
  return out;
}

interface Descriptor { mediaType: string; digest: string; size?: number; annotations?: Record<string, string>; platform?: { architecture: string; os: string } }

async function blob(dir: string, digest: string): Promise<{ path: string; bytes: () => Promise<Buffer> }> {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new BadRequestError(`invalid image archive: unsupported digest ${digest}`);
  const rel = `blobs/sha256/${m[1]}`;
  const path = await resolveInside(dir, rel).catch((e: Error) => {
    throw /missing/.test(e.message) ? new BadRequestError(`invalid image archive: missing blob ${digest}`) : e;
  });
  return {
    path,
    bytes: async () => {
      const b = await readInside(dir, rel);
      if (sha256Hex(b) !== m[1]) throw new BadRequestError(`invalid image archive: blob digest mismatch for ${digest}`);
      return b;
    },
  };
}

async function loadOciLayout(dir: string, addLayer: AddLayer): Promise<LoadedImage[]> {
  const index = await readJsonFile<{ manifests: Descriptor[] }>(dir, 'index.json');
  const out: LoadedImage[] = [];
  const visit = async (d: Descriptor, name?: string): Promise<void> => {
    const bytes = await (await blob(dir, d.digest)).bytes();
    const doc = parseJson<{ manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] }>(bytes, d.digest);
    if (doc.manifests) {
      // An index: pick this host's platform (it named amd64 whatever the host was).
      const pick = doc.manifests.find((x) => !x.platform || (x.platform.os === 'linux' && x.platform.architecture === goArch()));
      if (!pick) throw new BadRequestError(`invalid image archive: no manifest for linux/${goArch()}`);
      await visit(pick, name);
      return;
    }
    if (!doc.config || !doc.layers) throw new BadRequestError(`invalid image archive: ${d.digest} is not an image manifest`);
    const configBytes = await (await blob(dir, doc.config.digest)).bytes();
    const config = parseJson<ImageConfigFile>(configBytes, doc.config.digest);
    const layerBlobs = await Promise.all(doc.layers.map((l) => blob(dir, l.digest)));
    await storeLayers(config, layerBlobs.map((b) => b.path), addLayer, doc.layers.map((l) => l.digest));
    out.push({ config: configBytes, tags: name ? [name] : [] });
  };
  for (const d of index.manifests ?? []) {
    const ann = d.annotations ?? {};
    const name = ann['io.containerd.image.name'] ?? refName(ann['org.opencontainers.image.ref.name']);
    await visit(d, name);
  }
  return out;
}

/** org.opencontainers.image.ref.name is a full reference in Docker's layouts, often a bare tag elsewhere. */
function refName(v: string | undefined): string | undefined {
  if (!v) return undefined;
  return v.includes(':') || v.includes('/') ? v : undefined;
}

/** writeTar puts the layer's exact uncompressed tarball at a path. */
export interface SaveImage { id: string; configPath: string; tags: string[]; layers: Array<{ diffId: string; writeTar: (dest: string) => Promise<void> }> }

/** Lays out a docker-archive (as `docker save` of Docker 20.10 writes it) in `dir`. */
export async function writeDockerArchive(dir: string, images: SaveImage[]): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const manifest: Array<{ Config: string; RepoTags: string[] | null; Layers: string[] }> = [];
  const repositories: Record<string, Record<string, string>> = {};
  for (const img of images) {
    const configName = `${img.id.slice(7)}.json`;
    await fs.copyFile(img.configPath, join(dir, configName));
    const layerPaths: string[] = [];
    let parent = '';
    for (const l of img.layers) {
      // Docker names layer directories by a v1 id chained from the parent; any stable id will do.
      const v1 = sha256Hex(`${parent} ${l.diffId}`);
      const ldir = join(dir, v1);
      if (!(await exists(dir, v1))) {
        await fs.mkdir(ldir);
        await l.writeTar(join(ldir, 'layer.tar'));
        await fs.writeFile(join(ldir, 'VERSION'), '1.0');
        await fs.writeFile(join(ldir, 'json'), JSON.stringify({ id: v1, ...(parent ? { parent } : {}), created: '1970-01-01T00:00:00Z' }));
      }
      layerPaths.push(`${v1}/layer.tar`);
      parent = v1;
    }
    manifest.push({ Config: configName, RepoTags: img.tags.length ? img.tags : null, Layers: layerPaths });
    for (const t of img.tags) {
      const i = t.lastIndexOf(':');
      (repositories[t.slice(0, i)] ??= {})[t.slice(i + 1)] = parent;
    }
  }
  await fs.writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
  if (Object.keys(repositories).length) await fs.writeFile(join(dir, 'repositories'), JSON.stringify(repositories));
}
