import { promises as fs } from 'node:fs';
import { runOk, run } from '../util/exec.js';

/**
 * Network namespaces owned by one berthd live as bind mounts under its own root directory rather
 * than in /run/netns, so two daemons (a test's and a benchmark's, say) never see each other's.
 * Node cannot enter a namespace, so every command inside one goes through nsenter.
 */
export async function createNetns(path: string): Promise<void> {
  await fs.writeFile(path, '', { flag: 'wx' }).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'EEXIST') throw e;
  });
  try {
    // One process creates the namespace, pins it at `path` and brings loopback up inside it.
    await runOk('unshare', [`--net=${path}`, 'ip', 'link', 'set', 'lo', 'up']);
  } catch (e) {
    await fs.rm(path, { force: true });
    throw e;
  }
}

export async function deleteNetns(path: string): Promise<void> {
  const r = await run('umount', ['--lazy', path]);
  if (r.code !== 0 && !/not mounted|no mount point|not found/i.test(r.stderr)) {
    throw new Error(`umount ${path}: ${r.stderr.trim()}`);
  }
  await fs.rm(path, { force: true });
}

export async function netnsExists(path: string): Promise<boolean> {
  const mounts = await fs.readFile('/proc/self/mountinfo', 'utf8');
  return mounts.split('\n').some((l) => l.split(' ')[4] === path);
}

/** Runs an `ip -batch` script inside the namespace pinned at `path` (the host's when undefined). */
export async function ipBatch(nsPath: string | undefined, commands: string[]): Promise<void> {
  if (commands.length === 0) return;
  const input = commands.join('\n') + '\n';
  if (nsPath) await runOk('nsenter', [`--net=${nsPath}`, 'ip', '-batch', '-'], { input });
  else await runOk('ip', ['-batch', '-'], { input });
}

/** Reads `ip -j` JSON output inside a namespace. */
export async function ipJson<T>(nsPath: string | undefined, args: string[]): Promise<T> {
  const out = nsPath
    ? await runOk('nsenter', [`--net=${nsPath}`, 'ip', '-j', ...args])
    : await runOk('ip', ['-j', ...args]);
  return JSON.parse(out || '[]') as T;
}
