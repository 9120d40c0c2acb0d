import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { readJson, removeStaleTemps, replaceJson, writeJsonAtomic } from '../store/atomic.js';
import { BadRequestError, NotFoundError } from '../util/errors.js';
import type { NetworkDriver } from './driver.js';
import type { Ipam } from './ipamdriver.js';
import type { NetworkRecord, NetworkScope } from './types.js';

/**
 * Where the records of one scope live. The local store keeps files under berthd's root; a
 * cluster-wide store (etcd) serves `swarm`/`global` networks behind the same four calls.
 */
export interface RecordStore {
  /** Every record, and the records whose removal a crash interrupted (their kernel side may remain). */
  loadAll(): Promise<{ records: NetworkRecord[]; removing: NetworkRecord[] }>;
  save(n: NetworkRecord): Promise<void>;
  /** Marks the record removed before its kernel side goes: a crash in between is finished at the next start. */
  beginRemove(n: NetworkRecord): Promise<void>;
  finishRemove(n: NetworkRecord): Promise<void>;
}

/** At most one write of a swarm network's record per this much time (see NetworkRegistry.saveSoon). */
export const SWARM_SAVE_MS = 1000;

/** Suffix of a removed network's record until its kernel side is gone. */
const REMOVING = '.removing';

/** Records as files written with write+fsync+rename: a kill -9 leaves the old or the new one. */
export class LocalRecordStore implements RecordStore {
  constructor(private readonly dir: string) {}

  async loadAll(): Promise<{ records: NetworkRecord[]; removing: NetworkRecord[] }> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await removeStaleTemps(this.dir);
    const records: NetworkRecord[] = [];
    const removing: NetworkRecord[] = [];
    for (const f of (await fs.readdir(this.dir)).sort()) {
      if (!f.endsWith('.json') && !f.endsWith(REMOVING)) continue;
      const n = await readJson<NetworkRecord>(join(this.dir, f));
      if (n) (f.endsWith(REMOVING) ? removing : records).push(n);
    }
    return { records, removing };
  }

  /**
   * A swarm network's record is this host's copy of the cluster store's (with this host's
   * allocations, which the store holds too): every list of the store registers and corrects it,
   * so it is replaced without fsync, which under the store's own writes took 10 ms a save.
   */
  save(n: NetworkRecord): Promise<void> {
    return n.Scope === 'swarm' ? replaceJson(this.file(n), n) : writeJsonAtomic(this.file(n), n);
  }

  beginRemove(n: NetworkRecord): Promise<void> {
    return fs.rename(this.file(n), `${this.file(n)}${REMOVING}`);
  }

  async finishRemove(n: NetworkRecord): Promise<void> {
    await Promise.all([fs.rm(`${this.file(n)}${REMOVING}`, { force: true }), fs.rm(this.file(n), { force: true })]);
  }

  private file(n: NetworkRecord): string {
    return join(this.dir, `${n.Id}.json`);
  }
}

/** What changed: endpoints of these networks, of these containers. Derived views (DNS) follow it. */
export interface NetworkChange { networks: string[]; containers: string[] }

/**
 * Drivers and IPAMs known by no registration: plugins, made on demand under the name asked for.
 * Making one contacts nothing; `activate` finds the plugin (Docker's 404 when it is nowhere).
 */
export interface PluginSource {
  driver(name: string): NetworkDriver & { activate(): Promise<unknown> };
  ipam(name: string): Ipam & { activate(): Promise<unknown> };
}

/** Names that are sandbox modes, never a plugin's. */
const NOT_PLUGINS = new Set(['host', 'null', 'none', 'default']);

/**
 * The bottom of the network layer: network records and their persistence, the one place drivers
 * are registered and looked up by name, and change notification. It runs no kernel command.
 */
export class NetworkRegistry {
  readonly networks = new Map<string, NetworkRecord>();
  private readonly drivers = new Map<string, NetworkDriver>();
  private readonly ipams = new Map<string, Ipam>();
  /** The record write in flight per network (see save()). */
  private readonly saving = new Map<string, Promise<void>>();
  /** Swarm networks whose record is due to be written (see saveSoon()). */
  private readonly due = new Map<string, NodeJS.Timeout>();
  private readonly listeners: Array<(c: NetworkChange) => void> = [];
  private gen = 0;

  private plugins?: PluginSource;

  constructor(private readonly stores: Partial<Record<NetworkScope, RecordStore>>) {}

  /** Where drivers and IPAMs of unregistered names come from (the daemon sets Docker's plugins). */
  setPluginSource(s: PluginSource): void {
    this.plugins = s;
  }

  /**
   * The driver of this name for a new network: a registered one, or a plugin found and activated
   * now and registered from then on. Undefined when there is none.
   */
  async loadDriver(name: string): Promise<NetworkDriver | undefined> {
    return this.loadPlugin(this.drivers, name, (p) => p.driver(name));
  }

  /** As loadDriver, for IPAM. */
  async loadIpam(name: string): Promise<Ipam | undefined> {
    return this.loadPlugin(this.ipams, name, (p) => p.ipam(name));
  }

  /** A registered entry, or a plugin of that name activated now and registered (the first activation to finish wins). */
  private async loadPlugin<T, P extends T & { activate(): Promise<unknown> }>(registered: Map<string, T>, name: string, make: (plugins: NonNullable<typeof this.plugins>) => P): Promise<T | undefined> {
    const known = registered.get(name);
    if (known || !this.plugins || NOT_PLUGINS.has(name)) return known;
    const entry = make(this.plugins);
    await entry.activate();
    if (!registered.has(name)) registered.set(name, entry);
    return registered.get(name);
  }

  /** A stored network's plugin, registered without contacting it (it is asked at first use). */
  private pluginDriver(name: string): NetworkDriver | undefined {
    if (!this.plugins || NOT_PLUGINS.has(name)) return undefined;
    const d = this.plugins.driver(name);
    this.drivers.set(name, d);
    return d;
  }

  registerDriver(d: NetworkDriver): void {
    if (this.drivers.has(d.name)) throw new Error(`network driver ${d.name} registered twice`);
    this.drivers.set(d.name, d);
  }

  driver(name: string): NetworkDriver | undefined {
    return this.drivers.get(name);
  }

  /** The drivers registered or loaded so far. */
  loadedDrivers(): NetworkDriver[] {
    return [...this.drivers.values()];
  }

  registerIpam(i: Ipam): void {
    if (this.ipams.has(i.name)) throw new Error(`IPAM driver ${i.name} registered twice`);
    this.ipams.set(i.name, i);
  }

  ipam(name: string): Ipam | undefined {
    return this.ipams.get(name);
  }

  /** The IPAM that holds a network's pools. */
  ipamOf(n: NetworkRecord): Ipam {
    let i = this.ipams.get(n.IPAM.Driver || 'default');
    if (!i && this.plugins && !NOT_PLUGINS.has(n.IPAM.Driver)) {
      i = this.plugins.ipam(n.IPAM.Driver);
      this.ipams.set(n.IPAM.Driver, i);
    }
    if (!i) throw new NotFoundError(`plugin "${n.IPAM.Driver}" not found`);
    return i;
  }

  /** The driver behind a network; undefined for host and none, which are sandbox modes. */
  driverOf(n: NetworkRecord): NetworkDriver | undefined {
    return this.drivers.get(n.Driver) ?? this.pluginDriver(n.Driver);
  }

  registeredDrivers(): NetworkDriver[] {
    return [...this.drivers.values()];
  }

  /** Loads every scope's records; `finishRemoval` is handed each record whose removal a crash cut short. */
  async load(finishRemoval: (n: NetworkRecord) => Promise<void>): Promise<void> {
    for (const store of Object.values(this.stores)) {
      const { records, removing } = await store.loadAll();
      for (const n of removing) {
        await finishRemoval(n).catch((e: Error) => console.error(`berthd: removing network ${n.Name}: ${e.message}`));
        await store.finishRemove(n);
      }
      for (const n of records) this.networks.set(n.Id, n);
    }
  }

  private store(n: NetworkRecord): RecordStore {
    const s = this.stores[n.Scope];
    if (!s) throw new BadRequestError(`no store for ${n.Scope}-scoped networks on this host`);
    return s;
  }

  /**
   * Writes a network's record. Writes of one record run one after the other and each takes the
   * record as it is when it starts, so concurrent joins (compose starting a project) can never
   * leave an older allocation state on disk last.
   */
  save(n: NetworkRecord): Promise<void> {
    // An update of a record that left the registry (removed, or a swarm network dropped while a
    // container's leave still ran) must not bring it back: `docker stack rm` left its network
    // listed on the hosts whose task containers stopped after the network had gone.
    if (this.networks.get(n.Id) !== n) return Promise.resolve();
    if (n.Scope === 'swarm') { this.saveSoon(n.Id); return Promise.resolve(); }
    return this.write(n);
  }

  /**
   * A swarm network's record caches the cluster store (its pool mirrors every host's claims, and
   * every list of the store registers and corrects it), so its writes are coalesced, one per
   * SWARM_SAVE_MS at most, and nobody waits for them: written at each join and leave, its 85 KB at
   * 1,000 endpoints cost each `network connect` and `disconnect` 1-2 ms more than on a small
   * network. An address it lost in a crash is one the store's claim still guards.
   */
  private saveSoon(id: string): void {
    if (this.due.has(id)) return;
    this.due.set(id, setTimeout(() => {
      this.due.delete(id);
      const n = this.networks.get(id);
      if (n) this.write(n).catch((e: Error) => console.error(`berthd: network ${n.Name}: ${e.message}`));
    }, SWARM_SAVE_MS));
  }

  /** Writes now the swarm networks' records that are due (berthd's stop), and waits for every write. */
  async flush(): Promise<void> {
    for (const [id, timer] of this.due) {
      clearTimeout(timer);
      this.due.delete(id);
      const n = this.networks.get(id);
      if (n) void this.write(n).catch(() => undefined);
    }
    await Promise.all([...this.saving.values()].map((p) => p.catch(() => undefined)));
  }

  /** A new record (or one replacing its predecessor of the same id): held from now on, and written. */
  add(n: NetworkRecord): Promise<void> {
    this.networks.set(n.Id, n);
    return this.write(n);
  }

  private write(n: NetworkRecord): Promise<void> {
    const next = (this.saving.get(n.Id) ?? Promise.resolve()).catch(() => undefined).then(() => this.store(n).save(n));
    this.saving.set(n.Id, next);
    next.finally(() => { if (this.saving.get(n.Id) === next) this.saving.delete(n.Id); }).catch(() => undefined);
    return next;
  }

  /** Forgets a record that a failed create had written. */
  async discard(n: NetworkRecord): Promise<void> {
    this.networks.delete(n.Id);
    await this.saving.get(n.Id)?.catch(() => undefined);
    await this.store(n).finishRemove(n);
  }

  /** Step one of a removal: the record becomes a tombstone and leaves the registry. */
  async beginRemove(n: NetworkRecord): Promise<void> {
    clearTimeout(this.due.get(n.Id));
    this.due.delete(n.Id);
    // A write still in flight (the last disconnect's) would bring the record back after the rename.
    await this.saving.get(n.Id)?.catch(() => undefined);
    await this.store(n).beginRemove(n);
    this.networks.delete(n.Id);
  }

  finishRemove(n: NetworkRecord): Promise<void> {
    return this.store(n).finishRemove(n);
  }

  byName(name: string): NetworkRecord | undefined {
    for (const n of this.networks.values()) if (n.Name === name) return n;
    return undefined;
  }

  /** Networks of this name: more than one where a create asked for no duplicate check. */
  named(name: string): NetworkRecord[] {
    return [...this.networks.values()].filter((n) => n.Name === name);
  }

  /** By full id, name, or unique id prefix, as Docker resolves network references. */
  find(ref: string): NetworkRecord | undefined {
    const byId = this.networks.get(ref);
    if (byId) return byId;
    const named = this.named(ref);
    if (named.length > 1) throw new BadRequestError(`network ${ref} is ambiguous (${named.length} matches found based on name)`);
    if (named[0]) return named[0];
    const matches = [...this.networks.values()].filter((n) => n.Id.startsWith(ref));
    if (matches.length > 1) throw new BadRequestError(`network ${ref} is ambiguous (${matches.length} matches found based on ID prefix)`);
    return matches[0];
  }

  get(ref: string): NetworkRecord {
    const n = this.find(ref);
    if (!n) throw new NotFoundError(`network ${ref} not found`);
    return n;
  }

  list(): NetworkRecord[] {
    return [...this.networks.values()].sort((a, b) => a.Created.localeCompare(b.Created));
  }

  /** Bumped on every endpoint change, so derived views know when to rebuild. */
  get generation(): number {
    return this.gen;
  }

  onChange(cb: (c: NetworkChange) => void): void {
    this.listeners.push(cb);
  }

  changed(networks: string[], containerId: string): void {
    this.gen++;
    for (const cb of this.listeners) cb({ networks, containers: [containerId] });
  }
}
