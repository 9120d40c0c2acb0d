import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidAlive } from './process.js';

/**
 * Private temp directories for files a child program must read or write (nft scripts, openssl's
 * keys). The berthd's pid is in the name, so a later berthd can remove what a killed one left.
 */
const PREFIXES = ['berth-nft', 'berth-pki'] as const;
export type ScratchKind = (typeof PREFIXES)[number];

export async function withScratchDir<T>(kind: ScratchKind, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await fs.mkdtemp(join(tmpdir(), `${kind}-${process.pid}-`));
  try {
    return await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Removes the scratch directories of berthds that are gone (killed between making and removing one). */
export async function removeStaleScratch(): Promise<void> {
  const pattern = new RegExp(`^(?:${PREFIXES.join('|')})-(\\d+)-`);
  for (const name of await fs.readdir(tmpdir()).catch(() => [] as string[])) {
    const m = pattern.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    if (pidAlive(Number(m[1]))) continue;
    await fs.rm(join(tmpdir(), name), { recursive: true, force: true });
  }
}
