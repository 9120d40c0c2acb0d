import { promises as fs } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { run, runOk } from '../util/exec.js';

/** Mounts an overlay filesystem: image layers read-only below, the container's own layer on top. */
export async function mountOverlay(lowerDirs: string[], upper: string, work: string, target: string): Promise<void> {
  await Promise.all([upper, work, target].map((d) => fs.mkdir(d, { recursive: true })));
  if (await hasOwnFilesystem(target)) return;
  const opts = `lowerdir=${lowerDirs.join(':')},upperdir=${upper},workdir=${work}`;
  await runOk('mount', ['-t', 'overlay', 'overlay', '-o', opts, target]);
}

export async function unmount(target: string): Promise<void> {
  if (!(await hasOwnFilesystem(target))) return;
  const r = await run('umount', [target]);
  if (r.code !== 0) {
    // A process that escaped the container may still hold it; detach so removal can go on.
    await runOk('umount', ['--lazy', target]);
  }
}

/**
 * Whether a filesystem of its own is mounted at `path`: an overlay, like a pinned namespace (nsfs),
 * has a device number of its own, so comparing with the parent directory answers in two stats
 * instead of a read of /proc/self/mountinfo, which grows by a few lines with every container. (A
 * bind mount within one filesystem would not be seen; berth makes none where this is asked.)
 */
export async function hasOwnFilesystem(path: string): Promise<boolean> {
  try {
    const [self, parent] = await Promise.all([fs.stat(path), fs.stat(dirname(path))]);
    return self.dev !== parent.dev;
  } catch {
    return false;
  }
}

/** Mount points at or below `prefix`, deepest first (the order to unmount them in). */
export async function mountPointsUnder(prefix: string): Promise<string[]> {
  const under = prefix.endsWith('/') ? prefix : prefix + '/';
  const points = (await mountTable()).map((m) => m.point).filter((p) => p === prefix || p.startsWith(under));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

interface MountEntry { root: string; point: string; dev: string; shared: boolean }

/** berthd's mount table (/proc/self/mountinfo), with the kernel's octal escapes undone. */
async function mountTable(): Promise<MountEntry[]> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const unescape = (p: string) => p.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
  return text.split('\n').filter(Boolean).map((line) => {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    return { dev: f[2]!, root: unescape(f[3]!), point: unescape(f[4]!), shared: f.slice(6, sep).some((t) => t.startsWith('shared:')) };
  });
}

/**
 * Makes `dir` a private mount of its own: a bind of the directory onto itself, as containers/storage
 * does with its graph root. Everything berth mounts per container lives below it, so a mount
 * namespace can drop all of those at once by detaching this one mount (native/berth-runc.c), and
 * none of them propagates to another namespace. A bind berth made before a restart is recognised
 * (same device and directory as what lies beneath) and reused; a mount of the administrator's at
 * `dir` gets berth's bind stacked on top rather than changed. Returns whether `dir` is such a mount;
 * not yet, while mounts of an older berthd's containers lie below it (runc then sees them all).
 */
export async function ensurePrivateBind(root: string): Promise<boolean> {
  // The mount table names resolved paths: a root reached through a symlink must be compared as such.
  const dir = await fs.realpath(root);
  const table = await mountTable();
  const own = ownBindAt(table, dir);
  if (own && !own.shared) return true;
  if (!own) {
    // Containers of an older berthd still hold mounts below: a bind now would hide them (or, made
    // recursive, leave the originals pinned underneath after they stop). Wait for a start without.
    if (table.some((m) => m.point.startsWith(dir + '/'))) return false;
    const r = await run('mount', ['--bind', dir, dir]);
    if (r.code !== 0) return false;
  }
  return (await run('mount', ['--make-private', dir])).code === 0;
}

/** Undoes ensurePrivateBind: unmounts berth's bind at `root`, never a mount of the administrator's. */
export async function releasePrivateBind(root: string): Promise<void> {
  const dir = await fs.realpath(root);
  if (ownBindAt(await mountTable(), dir)) await runOk('umount', ['--lazy', dir]);
}

/** Whether the topmost mount at `dir` is a bind of `dir` itself onto itself (berth's). */
function ownBindAt(table: MountEntry[], dir: string): MountEntry | undefined {
  const at = table.filter((m) => m.point === dir);
  const top = at[at.length - 1];
  if (!top) return undefined;
  const below = at.length > 1 ? at[at.length - 2]! : table.filter((m) => m.point !== dir && (m.point === '/' || dir.startsWith(m.point + '/')))
    .reduce<MountEntry | undefined>((best, m) => (!best || m.point.length >= best.point.length ? m : best), undefined);
  if (!below || below.dev !== top.dev) return undefined;
  const expected = at.length > 1 ? below.root : join(below.root, relative(below.point, dir));
  return top.root === expected ? top : undefined;
}

/**
 * For each path below `root`, the mount it lies on: the path itself or its nearest ancestor with a
 * filesystem of its own. These are what a container must keep when its runtime drops berth's
 * mounts (native/berth-runc.c). Paths outside `root`, or on no mount of berth's, need nothing.
 */
export async function mountsHolding(root: string, paths: string[]): Promise<string[]> {
  const found = new Set<string>();
  for (const path of paths) {
    if (!path.startsWith(root + '/')) continue;
    for (let p = path; p !== root && p.startsWith(root + '/'); p = dirname(p)) {
      if (await hasOwnFilesystem(p)) { found.add(p); break; }
    }
  }
  return [...found];
}
