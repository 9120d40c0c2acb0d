import { promises as fs, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Crash-safe file writes: write a sibling temp file, fsync it, rename over the target, fsync the
 * directory. A kill -9 at any point leaves either the old or the new content, never a torn file.
 */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  const tmp = tempSibling(path);
  const fh = await fs.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, path);
  await syncDir(dirname(path));
}

/**
 * Replaces a file whole (temp file + rename) without fsync: readers and a killed process see the
 * old or the new content, never a torn one; a power loss may lose the new one. Synchronous: for
 * small files on a path that waits for them anyway.
 */
export function replaceFileSync(path: string, data: string): void {
  const tmp = tempSibling(path);
  writeFileSync(tmp, data, { mode: 0o600 });
  renameSync(tmp, path);
}

/** replaceFileSync without blocking: for records another store holds the truth of (a power loss is repaired from there). */
export async function replaceJson(path: string, value: unknown): Promise<void> {
  const tmp = tempSibling(path);
  await fs.writeFile(tmp, JSON.stringify(value, null, 1), { mode: 0o600 });
  await fs.rename(tmp, path);
}

/** A temp file beside `path` that no other writer (process or call) picks; removeStaleTemps knows its form. */
function tempSibling(path: string): string {
  return `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
}

async function syncDir(dir: string): Promise<void> {
  const dh = await fs.open(dir, 'r');
  try { await dh.sync(); } finally { await dh.close(); }
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(value, null, 1));
}

export async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await fs.readFile(path, 'utf8')) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Removes temp files a crash may have left behind next to atomically written files. */
export async function removeStaleTemps(dir: string): Promise<void> {
  let names: string[];
  try { names = await fs.readdir(dir); } catch { return; }
  await Promise.all(names.filter((n) => n.includes('.tmp-')).map((n) => fs.rm(`${dir}/${n}`, { force: true })));
}
