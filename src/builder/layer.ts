/** Layer tarballs made by the builder: a container's overlay upper dir, or files copied in. */
import { createReadStream, createWriteStream, promises as fs, type Stats } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type * as TarStream from 'tar-stream';
import { requireCjs } from '../util/cjs.js';

const tarStream = requireCjs('tar-stream') as typeof TarStream;
import { run } from '../util/exec.js';

/** One tree to put in the layer: a source path and where it goes (relative, no leading slash). */
export interface TreeSpec { src: string; dest: string; uid?: number; gid?: number; skip?: (rel: string) => boolean }

type Pack = TarStream.Pack;
type Hdr = Partial<TarStream.Header> & { name: string };

function header(st: Stats, name: string, o: { uid?: number; gid?: number }): Hdr {
  return { name, mode: st.mode & 0o7777, uid: o.uid ?? st.uid, gid: o.gid ?? st.gid, mtime: st.mtime };
}

function add(pack: Pack, h: Hdr, body?: Buffer | string): Promise<void> {
  return new Promise((resolve, reject) => pack.entry(h as TarStream.Header, body ?? '', (e) => (e ? reject(e) : resolve())));
}

async function addFile(pack: Pack, h: Hdr, path: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const entry = pack.entry(h as TarStream.Header, (e) => (e ? reject(e) : resolve()));
    createReadStream(path).on('error', reject).pipe(entry);
  });
}

/** Directories overlayfs marked opaque in an upper dir (one getfattr for the whole tree). */
async function opaqueDirs(root: string): Promise<Set<string>> {
  const r = await run('getfattr', ['-R', '--absolute-names', '-m', '^trusted\\.overlay\\.opaque$', '-d', root]);
  const out = new Set<string>();
  let file = '';
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('# file: ')) file = line.slice(8);
    else if (/^trusted\.overlay\.opaque="y"/.test(line)) out.add(file);
  }
  return out;
}

/**
 * Writes a layer tarball. With whiteouts, the trees are overlay upper dirs: a 0:0 character device
 * becomes `.wh.NAME` and an opaque directory gets `.wh..wh..opq`, the OCI spelling.
 */
export async function writeLayer(out: string, trees: TreeSpec[], o: { whiteouts?: boolean; parents?: string[] } = {}): Promise<void> {
  const pack = tarStream.pack();
  const done = pipeline(pack, createWriteStream(out, { mode: 0o600 }));
  const links = new Map<string, string>();
  try {
    // Fixed times for made-up parent directories keep the layer's digest, and so the cache, stable.
    const now = new Date(0);
    for (const p of o.parents ?? []) await add(pack, { name: `${p}/`, type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: now });
    for (const t of trees) {
      const opaque = o.whiteouts ? await opaqueDirs(t.src) : new Set<string>();
      const walk = async (abs: string, rel: string): Promise<void> => {
        if (rel && t.skip?.(rel)) return;
        const st = await fs.lstat(abs);
        const name = [t.dest, rel].filter(Boolean).join('/');
        if (st.isDirectory()) {
          if (name) await add(pack, { ...header(st, `${name}/`, t), type: 'directory' });
          if (opaque.has(abs)) await add(pack, { name: `${name ? `${name}/` : ''}.wh..wh..opq`, mode: 0o644, uid: 0, gid: 0, mtime: st.mtime });
          for (const e of (await fs.readdir(abs)).sort()) await walk(join(abs, e), rel ? `${rel}/${e}` : e);
          return;
        }
        if (o.whiteouts && st.isCharacterDevice() && st.rdev === 0) {
          const slash = name.lastIndexOf('/');
          await add(pack, { name: `${name.slice(0, slash + 1)}.wh.${name.slice(slash + 1)}`, mode: 0o644, uid: 0, gid: 0, mtime: st.mtime });
          return;
        }
        if (st.isSymbolicLink()) {
          await add(pack, { ...header(st, name, t), type: 'symlink', linkname: await fs.readlink(abs) });
          return;
        }
        if (st.isFile()) {
          const key = `${st.dev}:${st.ino}`;
          const first = st.nlink > 1 ? links.get(key) : undefined;
          if (first) { await add(pack, { ...header(st, name, t), type: 'link', linkname: first }); return; }
          if (st.nlink > 1) links.set(key, name);
          await addFile(pack, { ...header(st, name, t), type: 'file', size: st.size }, abs);
          return;
        }
        if (st.isFIFO()) await add(pack, { ...header(st, name, t), type: 'fifo' });
        else if (st.isCharacterDevice() || st.isBlockDevice()) {
          await add(pack, { ...header(st, name, t), type: st.isCharacterDevice() ? 'character-device' : 'block-device', devmajor: Math.floor(st.rdev / 256), devminor: st.rdev % 256 });
        }
      };
      await walk(t.src, '');
    }
    pack.finalize();
  } catch (e) {
    pack.destroy(e as Error);
    await done.catch(() => undefined);
    throw e;
  }
  await done;
}
