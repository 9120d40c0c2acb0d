import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { EndpointState, SandboxRef } from '../model/network.js';
import { readJson, removeStaleTemps, replaceFileSync } from '../store/atomic.js';
import { sharesNamespace } from './endpoints.js';

/** One endpoint a sandbox is about to make, or has: enough to find and remove it after a crash. */
export interface JournalEndpoint {
  networkId: string;
  endpointId: string;
  ip: string;
  ip6?: string;
  ifname: string;
}

/**
 * What a sandbox holds in the kernel and in IPAM, written before each thing is made, so that a kill
 * -9 at any moment leaves only what the next start finds here and removes (or keeps, for a
 * container that still runs). It lives as long as the sandbox.
 */
export interface SandboxJournal {
  id: string;
  netnsPath: string;
  endpoints: JournalEndpoint[];
}

export class JournalStore {
  private readonly entries = new Map<string, SandboxJournal>();

  constructor(private readonly dir: string) {}

  async load(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await removeStaleTemps(this.dir);
    for (const f of await fs.readdir(this.dir)) {
      if (!f.endsWith('.json')) continue;
      const j = await readJson<SandboxJournal>(join(this.dir, f));
      if (j) this.entries.set(j.id, j);
    }
  }

  get(id: string): SandboxJournal | undefined {
    return this.entries.get(id);
  }

  all(): SandboxJournal[] {
    return [...this.entries.values()];
  }

  /**
   * Writes the journal's current content, whole (temp file + rename), without fsync: a kill -9 of
   * berthd keeps what reached the page cache, and the one crash that loses it, the machine's,
   * also removes every namespace and link the journal guards. Written synchronously: a few hundred
   * bytes into the page cache cost less than the four thread-pool round trips of an async write
   * (open, write, close, rename), and connect and disconnect wait for it before the kernel work.
   */
  write(j: SandboxJournal): Promise<void> {
    this.entries.set(j.id, j);
    try {
      replaceFileSync(this.file(j.id), JSON.stringify(j));
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }

  async remove(id: string): Promise<void> {
    this.entries.delete(id);
    await fs.rm(this.file(id), { force: true });
  }

  private file(id: string): string {
    return join(this.dir, `${id}.json`);
  }
}

export function cloneEndpoints(eps: Record<string, EndpointState>): Record<string, EndpointState> {
  return Object.fromEntries(Object.entries(eps).map(([k, v]) => [k, { ...v }]));
}

/** A journal for a sandbox made before journals existed (or adopted without one), from the engine's record. */
export function journalFromRef(ref: SandboxRef): SandboxJournal | undefined {
  if (!ref.netnsPath || sharesNamespace(ref.mode)) return undefined;
  return {
    id: ref.id, netnsPath: ref.netnsPath,
    endpoints: Object.entries(ref.endpoints).filter(([, ep]) => ep.EndpointID).map(([netId, ep]) => entryOf(netId, ep)),
  };
}

/** The journal entry of an endpoint the engine's record names. */
export function entryOf(networkId: string, ep: EndpointState): JournalEndpoint {
  return { networkId, endpointId: ep.EndpointID, ip: ep.IPAddress, ...(ep.GlobalIPv6Address ? { ip6: ep.GlobalIPv6Address } : {}), ifname: ep.ifname };
}
