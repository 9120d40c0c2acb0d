import { promises as fs } from 'node:fs';
import { join, normalize } from 'node:path';
import { BadRequestError } from '../util/errors.js';
import { sha256Hex } from '../util/ids.js';
import { fileDigest } from './layers.js';
import type { ImageConfigFile } from './types.js';

export interface LoadedImage { config: Buffer; tags: string[] }
type AddLayer = (path: string, expectedDiffId?: string) => Promise<string>;

/** A path taken from an archive's own metadata must stay inside the unpacked archive. */
function inside(dir: string, rel: string): string {
  const p = normalize(join(dir, rel));
  if (!p.startsWith(dir + '/')) throw new BadRequestError(`invalid image archive: path ${rel} escapes the archive`);
  return p;
}

async function readJsonFile<T>(path: string, what: string): Promise<T> {
  try {
    return JSON.parse(await fs.readFile(path, 'utf8')) as T;
  } catch (e) {
    throw new BadRequestError(`invalid image archive: cannot read ${what}: ${(e as Error).message}`);
  }
}

async function exists(p: string): Promise<boolean> {
  try { await fs.access(p); return true; } catch { return false; }
}

/**
 * Reads an unpacked `docker save` archive (manifest.json) or OCI image layout (index.json),
 * verifying every digest, and stores its layers. Returns the image configs to commit; the caller
 * commits them only after every layer is in, so a bad archive stores no image.
 */
export async function loadArchive(dir: string, addLayer: AddLayer): Promise<LoadedImage[]> {
  if (await exists(join(dir, 'manifest.json'))) return loadDockerArchive(dir, addLayer);
  if (await exists(join(dir, 'index.json'))) return loadOciLayout(dir, addLayer);
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
  const manifest = await readJsonFile<Array<{ Config: string; RepoTags?: string[] | null; Layers: string[] }>>(join(dir, 'manifest.json'), 'manifest.json');
  if (!Array.isArray(manifest)) throw new BadRequestError('invalid image archive: manifest.json is not a list');
  const out: LoadedImage[] = [];
  for (const entry of manifest) {
    const configBytes = await fs.readFile(inside(dir, entry.Config)).catch(() => {
      throw new BadRequestError(`invalid image archive: missing config ${entry.Config}`);
    });
    // Newer archives name the config by its digest: check it when they do.
    const m = /([0-9a-f]{64})(\.json)?$/.exec(entry.Config);
    if (m && sha256Hex(configBytes) !== m[1]) throw new BadRequestError(`invalid image archive: config digest mismatch for ${entry.Config}`);
    const config = JSON.parse(configBytes.toString()) as ImageConfigFile;
    await storeLayers(config, entry.Layers.map((l) => inside(dir, l)), addLayer);
    out.push({ config: configBytes, tags: entry.RepoTags ?? [] });
  }
  return out;
}

interface Descriptor { mediaType: string; digest: string; size?: number; annotations?: Record<string, string>; platform?: { architecture: string; os: string } }

async function blob(dir: string, digest: string): Promise<{ path: string; bytes: () => Promise<Buffer> }> {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new BadRequestError(`invalid image archive: unsupported digest ${digest}`);
  const path = inside(dir, `blobs/sha256/${m[1]}`);
  return {
    path,
    bytes: async () => {
      const b = await fs.readFile(path).catch(() => { throw new BadRequestError(`invalid image archive: missing blob ${digest}`); });
      if (sha256Hex(b) !== m[1]) throw new BadRequestError(`invalid image archive: blob digest mismatch for ${digest}`);
      return b;
    },
  };
}

async function loadOciLayout(dir: string, addLayer: AddLayer): Promise<LoadedImage[]> {
  const index = await readJsonFile<{ manifests: Descriptor[] }>(join(dir, 'index.json'), 'index.json');
  const out: LoadedImage[] = [];
  const visit = async (d: Descriptor, name?: string): Promise<void> => {
    const bytes = await (await blob(dir, d.digest)).bytes();
    const doc = JSON.parse(bytes.toString()) as { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
    if (doc.manifests) {
      // An index: pick this host's platform.
      const pick = doc.manifests.find((x) => !x.platform || (x.platform.os === 'linux' && x.platform.architecture === 'amd64'));
      if (!pick) throw new BadRequestError('invalid image archive: no manifest for linux/amd64');
      await visit(pick, name);
      return;
    }
    if (!doc.config || !doc.layers) throw new BadRequestError(`invalid image archive: ${d.digest} is not an image manifest`);
    const configBytes = await (await blob(dir, doc.config.digest)).bytes();
    const config = JSON.parse(configBytes.toString()) as ImageConfigFile;
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
      if (!(await exists(ldir))) {
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
