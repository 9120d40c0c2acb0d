import type { Cmp, Versioned, WatchEvent } from '../../src/cluster/store.js';

/**
 * An in-memory cluster store with etcd's semantics for what berth uses: revisions,
 * compare-and-swap transactions, a list at a revision, watches from a revision and a watch the
 * store cancels.
 */
export class MemStore {
  rev = 1;
  data = new Map<string, { value: unknown; mod: number; create: number }>();
  watchers: Array<{ prefix: string; onBatch: (e: WatchEvent<unknown>[]) => void; onLost: (e: Error) => void }> = [];
  lists = 0;
  /** Runs inside the next list, as a store client replaced while a host lists. */
  duringList?: () => void;

  /** A write the watchers hear of (`silent`: as if its events were compacted away before they were sent). */
  write(puts: Array<[string, unknown]>, deletes: string[] = [], silent = false): number {
    this.rev++;
    const events: WatchEvent<unknown>[] = [];
    for (const [key, value] of puts) {
      const create = this.data.get(key)?.create ?? this.rev;
      this.data.set(key, { value: structuredClone(value), mod: this.rev, create });
      events.push({ type: 'put', key, value: structuredClone(value), modRevision: this.rev });
    }
    for (const key of deletes) if (this.data.delete(key)) events.push({ type: 'delete', key, modRevision: this.rev });
    if (!silent) for (const w of this.watchers) {
      const mine = events.filter((e) => e.key.startsWith(w.prefix));
      if (mine.length) setImmediate(() => w.onBatch(mine));
    }
    return this.rev;
  }

  txns = 0;

  /** A call to the store's client (a lease grant): the real store maps its lost-quorum errors to Docker's 503; this one has none. */
  call<T>(fn: () => Promise<T>): Promise<T> {
    return fn();
  }

  async listAt<T>(prefix: string): Promise<{ items: Map<string, Versioned<T>>; revision: number }> {
    this.lists++;
    const hook = this.duringList;
    this.duringList = undefined;
    hook?.();
    const items = new Map<string, Versioned<T>>();
    for (const [k, v] of this.data) if (k.startsWith(prefix)) items.set(k, { value: structuredClone(v.value) as T, modRevision: v.mod });
    return { items, revision: this.rev };
  }

  async watchBatches<T>(prefix: string, _from: number, onBatch: (e: WatchEvent<T>[]) => void, onLost: (e: Error) => void): Promise<() => Promise<void>> {
    const w = { prefix, onBatch: onBatch as (e: WatchEvent<unknown>[]) => void, onLost };
    this.watchers.push(w);
    return async () => { this.watchers = this.watchers.filter((x) => x !== w); };
  }

  async txn(cmp: Cmp[], puts: Array<{ key: string; value: unknown }>, deletes: string[] = []): Promise<{ ok: boolean; revision: number }> {
    // etcd's own limit (`--max-txn-ops`, 128 by default), checked before anything is compared.
    if (cmp.length > 128 || puts.length + deletes.length > 128) throw new Error('etcdserver: too many operations in txn request');
    this.txns++;
    for (const c of cmp) {
      const d = this.data.get(c.key);
      const got = c.target === 'Mod' ? d?.mod ?? 0 : c.target === 'Create' ? d?.create ?? 0 : d ? 1 : 0;
      if (got !== c.value) return { ok: false, revision: this.rev };
    }
    return { ok: true, revision: this.write(puts.map((p) => [p.key, p.value]), deletes) };
  }

  async get<T>(key: string): Promise<Versioned<T> | undefined> {
    const d = this.data.get(key);
    return d ? { value: structuredClone(d.value) as T, modRevision: d.mod } : undefined;
  }

  async list<T>(prefix: string): Promise<Map<string, Versioned<T>>> {
    return (await this.listAt<T>(prefix)).items;
  }

  async readMany(reads: Array<{ key: string; prefix?: boolean }>): Promise<Array<Map<string, Versioned<unknown>>>> {
    return Promise.all(reads.map(async (r) => (r.prefix ? this.list(r.key) : new Map([...this.data].filter(([k]) => k === r.key).map(([k, v]) => [k, { value: v.value, modRevision: v.mod }])))));
  }

  async readManyAt(prefixes: string[]): Promise<{ revision: number; found: Array<Map<string, Versioned<unknown>>> }> {
    return { revision: this.rev, found: await Promise.all(prefixes.map((p) => this.list(p))) };
  }

  async revision(): Promise<number> {
    return this.rev;
  }

  async deletePrefix(prefix: string): Promise<void> {
    this.write([], [...this.data.keys()].filter((k) => k.startsWith(prefix)));
  }
}

