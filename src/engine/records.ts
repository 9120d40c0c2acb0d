import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { readJson, removeStaleTemps, writeJsonAtomic } from '../store/atomic.js';
import { BadRequestError, NotFoundError } from '../util/errors.js';
import { KeyedQueue } from '../util/serial.js';
import type { ContainerRecord } from './types.js';

/**
 * The container records: kept in memory, each written to disk whole (write+fsync+rename) on every
 * change, found by id, name or id prefix, and changed one operation at a time per container.
 */
export class ContainerRecords {
  readonly containers = new Map<string, ContainerRecord>();
  private readonly names = new Map<string, string>();
  private readonly locks = new KeyedQueue();
  /** Who holds each container's lock, and each container's last step: said of a request with no answer. */
  private readonly holders = new Map<string, { what: string; since: number }>();
  private readonly marks = new Map<string, { step: string; since: number }>();

  constructor(readonly dir: string) {}

  bundleDir(id: string): string { return join(this.dir, id); }

  async save(c: ContainerRecord): Promise<void> {
    await writeJsonAtomic(join(this.bundleDir(c.Id), 'container.json'), c);
  }

  /** Every stored record; a directory whose record was never written (a crash during create) is removed. */
  async loadAll(): Promise<ContainerRecord[]> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const out: ContainerRecord[] = [];
    for (const id of await fs.readdir(this.dir)) {
      await removeStaleTemps(this.bundleDir(id));
      const c = await readJson<ContainerRecord>(join(this.bundleDir(id), 'container.json'));
      if (!c) {
        await fs.rm(this.bundleDir(id), { recursive: true, force: true });
        continue;
      }
      this.add(c);
      out.push(c);
    }
    return out;
  }

  add(c: ContainerRecord): void {
    this.containers.set(c.Id, c);
    this.names.set(c.Name, c.Id);
  }

  delete(c: ContainerRecord): void {
    this.containers.delete(c.Id);
    this.marks.delete(c.Id);
    if (this.names.get(c.Name) === c.Id) this.names.delete(c.Name);
  }

  /** The id holding a name ("/name"), if any. */
  holderOf(name: string): string | undefined {
    return this.names.get(name);
  }

  rename(c: ContainerRecord, name: string): void {
    this.names.delete(c.Name);
    c.Name = name;
    this.names.set(name, c.Id);
  }

  /** Finds a container by full id, name (with or without "/") or unique id prefix, as Docker does. */
  find(ref: string): ContainerRecord | undefined {
    const byId = this.containers.get(ref);
    if (byId) return byId;
    const byName = this.names.get(ref.startsWith('/') ? ref : `/${ref}`);
    if (byName) return this.containers.get(byName);
    if (!/^[0-9a-f]+$/.test(ref)) return undefined;
    const matches = [...this.containers.values()].filter((c) => c.Id.startsWith(ref));
    if (matches.length > 1) throw new BadRequestError(`Multiple IDs found with provided prefix: ${ref}`);
    return matches[0];
  }

  get(ref: string): ContainerRecord {
    const c = this.find(ref);
    if (!c) throw new NotFoundError(`No such container: ${ref}`);
    return c;
  }

  list(): ContainerRecord[] {
    return [...this.containers.values()].sort((a, b) => b.Created.localeCompare(a.Created));
  }

  /**
   * Serialises operations on one container: start, stop and remove never interleave. `holder`
   * names the work, for a request stuck behind it (see progress()).
   */
  withLock<T>(id: string, holder: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(id, async () => {
      this.holders.set(id, { what: holder, since: Date.now() });
      this.mark(id, `${holder}: under way`);
      try {
        return await fn();
      } finally {
        this.holders.delete(id);
      }
    });
  }

  /** Where the work on a container has got to; read only when a request is slow (see progress()). */
  mark(id: string, step: string): void {
    this.marks.set(id, { step, since: Date.now() });
  }

  /** Said of a request about this container that has had no answer for long: its last step and its lock's holder. */
  progress(id: string): string {
    const ago = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;
    const m = this.marks.get(id);
    const h = this.holders.get(id);
    return `container ${id.slice(0, 12)} is at: ${m ? `${m.step} (for ${ago(m.since)})` : 'no step marked'}; its lock is ${h ? `held by ${h.what} (for ${ago(h.since)})` : 'free'}`;
  }

  /** Resolves once the operations queued on a container so far have finished. */
  settled(id: string): Promise<void> {
    return this.locks.settled(id);
  }
}
