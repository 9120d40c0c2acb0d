import { promises as fs } from 'node:fs';
import { nativeAddon } from '../util/cjs.js';
import { runOk } from '../util/exec.js';
import { hasOwnFilesystem } from './mount.js';
import { CommandStream, ipDialect } from './stream.js';

/**
 * Network namespaces owned by one berthd live as bind mounts under its own root directory rather
 * than in /run/netns, so two daemons (a test's and a benchmark's, say) never see each other's.
 * Node has no unshare: the addon native/berth-netns.c makes, pins and releases them without an
 * `unshare` or `umount` process; commands run inside one through berth-spawn (util/exec.ts).
 */
/** A veth made inside a namespace (the `ip -batch` commands joinEndpoint ran there before). */
export interface VethInside {
  netnsPath: string; ifname: string; hostIf: string; mac: string; mtu: number;
  address: string; gateway?: string; address6?: string; gateway6?: string;
}

interface NsAddon {
  createNetns(path: string): void;
  unpin(path: string): void;
  joinVeth(spec: VethInside): Promise<void>;
  loopbackUp(path: string): void;
  linkIndex(name: string): number;
}

const ns = nativeAddon<NsAddon>('berth-netns.node', 'network namespaces');

export async function createNetns(path: string): Promise<void> {
  await fs.writeFile(path, '', { flag: 'wx' }).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'EEXIST') throw e;
  });
  try {
    ns().createNetns(path);
  } catch (e) {
    await fs.rm(path, { force: true });
    throw e;
  }
}

/**
 * Makes a veth pair inside the namespace at `netnsPath` over rtnetlink (native/berth-veth.c): the
 * container's end configured (address, up, default routes), its peer `hostIf` in berthd's
 * namespace. No `ip` process: starting one inside a namespace cost more than the kernel's work.
 */
export function createVethInside(spec: VethInside): Promise<void> {
  return ns().joinVeth(spec);
}

/** Brings `lo` up inside the namespace pinned (or named by /proc) at `path`, without an `ip` process. */
export function loopbackUp(path: string): void {
  ns().loopbackUp(path);
}

export async function deleteNetns(path: string): Promise<void> {
  ns().unpin(path);
  await fs.rm(path, { force: true });
}

/** Whether a namespace is pinned at `path` (the file stays, empty, once it is released). */
export async function netnsExists(path: string): Promise<boolean> {
  return hasOwnFilesystem(path);
}

/** berthd's own `ip`, kept running: most link changes happen in berthd's namespace. */
export const hostIp = new CommandStream(ipDialect);

/**
 * A second one for deletions, which the kernel makes wait for RCU grace periods (~15 ms for a veth,
 * ~40 ms for a bridge): they must not hold up creations queued behind them on hostIp.
 */
export const hostIpDeletions = new CommandStream(ipDialect);

/**
 * Runs `ip` batch commands inside the namespace pinned at `path`, or in berthd's own through the
 * long-lived hostIp. Either way every command runs, and any failure rejects with `ip`'s messages.
 */
export async function ipBatch(nsPath: string | undefined, commands: string[]): Promise<void> {
  if (commands.length === 0) return;
  if (!nsPath) return hostIp.run(commands);
  await runOk('ip', ['-force', '-batch', '-'], { input: commands.join('\n') + '\n', netns: nsPath });
}

/** Reads `ip -j` JSON output inside a namespace. */
export async function ipJson<T>(nsPath: string | undefined, args: string[]): Promise<T> {
  const out = await runOk('ip', ['-j', ...args], nsPath ? { netns: nsPath } : {});
  return JSON.parse(out || '[]') as T;
}

/**
 * Whether a link of this name exists in berthd's namespace: a lookup by name in the kernel
 * (native/berth-netns.c), with no `ip` process and no listing of every link (a host of 1,000
 * containers has 1,000 veths). A name longer than the kernel's 15 bytes names no link.
 */
export async function linkExists(name: string): Promise<boolean> {
  if (!name || Buffer.byteLength(name) > 15) return false;
  return ns().linkIndex(name) > 0;
}
