import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
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
  const info = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const points = info.split('\n').map((l) => l.split(' ')[4]).filter((p): p is string => !!p)
    .map((p) => p.replace(/\\040/g, ' '))
    .filter((p) => p === prefix || p.startsWith(prefix.endsWith('/') ? prefix : prefix + '/'));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}
