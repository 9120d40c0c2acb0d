import { appendFileSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { EndpointState, SandboxRef } from '../model/network.js';
import { removeStaleTemps, replaceFileSync } from '../store/atomic.js';
import { ownsNamespace } from './endpoints.js';

/** One endpoint a sandbox is about to make, or has: enough to find and remove it after a crash. */
export interface JournalEndpoint {
  networkId: string;
  endpointId: string;
  ip: string;
  ip6?: string;
  ifname: string;
  /**
   * Being disconnected: whatever the records say, the next start finishes the removal. Lets the
   * kernel's part run while the engine writes the container's record.
   */
  leaving?: true;
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

/** A journal file is rewritten whole once its appended states reach this size. */
const COMPACT_AT = 16 * 1024;

export class JournalStore {
  private readonly entries = new Map<string, SandboxJournal>();
  /** Bytes in each journal's file: its states, one JSON line each, the last one current. */
  private readonly sizes = new Map<string, number>();

  constructor(private readonly dir: string) {}

  async load(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await removeStaleTemps(this.dir);
    for (const f of await fs.readdir(this.dir)) {
      if (!f.endsWith('.json')) continue;
      const text = await fs.readFile(join(this.dir, f), 'utf8').catch(() => '');
      const j = lastState(text);
      if (!j) continue;
      this.entries.set(j.id, j);
      // A file not ending in a newline (torn, or written whole by an older berth) is rewritten at
      // its next write: a line appended to it would run on from its last one.
      if (text.endsWith('\n')) this.sizes.set(j.id, Buffer.byteLength(text));
    }
  }

  get(id: string): SandboxJournal | undefined {
    return this.entries.get(id);
  }

  all(): SandboxJournal[] {
    return [...this.entries.values()];
  }

  /**
   * Records the journal's current content, without fsync: a kill -9 of berthd keeps what reached
   * the page cache, and the one crash that loses it, the machine's, also removes every namespace
   * and link the journal guards. Appended as one line to the states before it (one write, which a
   * kill cannot tear, and no rename: replacing a file costs ext4 a flush of its data), and the file
   * is rewritten whole (temp file + rename) when it is new or has grown past COMPACT_AT.
   * Synchronous: a few hundred bytes into the page cache cost less than the thread-pool round
   * trips of an async write, and connect and disconnect wait for it before the kernel work.
   */
  write(j: SandboxJournal): Promise<void> {
    this.entries.set(j.id, j);
    try {
      const line = JSON.stringify(j) + '\n';
      const size = this.sizes.get(j.id) ?? 0;
      const bytes = Buffer.byteLength(line);
      if (size === 0 || size + bytes > COMPACT_AT) {
        replaceFileSync(this.file(j.id), line);
        this.sizes.set(j.id, bytes);
      } else {
        appendFileSync(this.file(j.id), line, { mode: 0o600 });
        this.sizes.set(j.id, size + bytes);
      }
      return Promise.resolve();
    } catch (e) {
      this.sizes.delete(j.id);
      return Promise.reject(e as Error);
    }
  }

  async remove(id: string): Promise<void> {
    this.entries.delete(id);
    this.sizes.delete(id);
    await fs.rm(this.file(id), { force: true });
  }

  private file(id: string): string {
    return join(this.dir, `${id}.json`);
  }
}

/** The last complete state of a journal file (a line the machine's crash cut short is skipped). */
export function lastState(text: string): SandboxJournal | undefined {
  const lines = text.split('\n').filter((l) => l.trim());
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      return JSON.parse(lines[i]!) as SandboxJournal;
    } catch {
      // A torn last line: the state before it holds.
    }
  }
  return undefined;
}

export function cloneEndpoints(eps: Record<string, EndpointState>): Record<string, EndpointState> {
  return Object.fromEntries(Object.entries(eps).map(([k, v]) => [k, { ...v }]));
}

/** A journal for a sandbox made before journals existed (or adopted without one), from the engine's record. */
export function journalFromRef(ref: SandboxRef): SandboxJournal | undefined {
  if (!ref.netnsPath || !ownsNamespace(ref.mode)) return undefined;
  return {
    id: ref.id, netnsPath: ref.netnsPath,
    endpoints: Object.entries(ref.endpoints).filter(([, ep]) => ep.EndpointID).map(([netId, ep]) => entryOf(netId, ep)),
  };
}

/** The journal entry of an endpoint the engine's record names. */
export function entryOf(networkId: string, ep: EndpointState): JournalEndpoint {
  return { networkId, endpointId: ep.EndpointID, ip: ep.IPAddress, ...(ep.GlobalIPv6Address ? { ip6: ep.GlobalIPv6Address } : {}), ifname: ep.ifname };
}
