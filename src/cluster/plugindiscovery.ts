import { PluginStatusError } from '../plugins/client.js';
import { NETWORK_DRIVER, type ActivePlugin, type PluginManager } from '../plugins/manager.js';
import { errorMessage } from '../util/errors.js';
import { SerialQueue } from '../util/serial.js';
import { ROOT, type AliveRecord } from './keys.js';
import type { WatchEvent } from './store.js';

/** libnetwork's discoverapi.NodeDiscovery. */
export const NODE_DISCOVERY = 1;

/** discoverapi.NodeDiscoveryData as Go marshals it (no tags: every field, always). */
export interface NodeDiscoveryData { Address: string; BindAddress: string; Self: boolean }

const ALIVE = `${ROOT}alive/`;
/** How long leaving the swarm waits for the plugins' DiscoverDelete. */
const CLOSE_WAIT_MS = 5000;

/**
 * The DiscoverNew and DiscoverDelete calls that bring what a plugin was told (node id → what it
 * heard) to the nodes present now: nodes gone or changed are deleted first, then the new ones
 * added, this node first and the others by address, so the order is the same on every run.
 */
export function discoveryCalls(told: Map<string, NodeDiscoveryData>, present: Map<string, NodeDiscoveryData>): Array<{ method: 'DiscoverNew' | 'DiscoverDelete'; node: string; data: NodeDiscoveryData }> {
  const same = (a: NodeDiscoveryData, b: NodeDiscoveryData) => a.Address === b.Address && a.BindAddress === b.BindAddress && a.Self === b.Self;
  const order = (a: [string, NodeDiscoveryData], b: [string, NodeDiscoveryData]) => Number(b[1].Self) - Number(a[1].Self) || a[1].Address.localeCompare(b[1].Address, undefined, { numeric: true }) || a[0].localeCompare(b[0]);
  const del = [...told].filter(([id, d]) => !present.has(id) || !same(present.get(id)!, d)).sort(order);
  const add = [...present].filter(([id, d]) => !told.has(id) || !same(told.get(id)!, d)).sort(order);
  return [
    ...del.map(([node, data]) => ({ method: 'DiscoverDelete' as const, node, data })),
    ...add.map(([node, data]) => ({ method: 'DiscoverNew' as const, node, data })),
  ];
}

/** Plugins whose connectivity reaches across hosts are told of nodes (libnetwork's pushNodeDiscovery: ConnectivityScope global, which defaults to Scope). */
function acrossHosts(p: ActivePlugin): boolean {
  return (p.network?.ConnectivityScope ?? p.network?.Scope) === 'global';
}

/**
 * Node discovery for Docker's global-scope network plugins on one host of a swarm, as libnetwork
 * gives its drivers: a plugin is told of this node (`Self`, with its data-path and bind address,
 * libnetwork's agentDriverNotify) and of every other node present in the cluster when it is
 * activated or when this host joins the swarm, then of each node that comes (DiscoverNew) or goes
 * (DiscoverDelete: it left, or its presence lapsed), as libnetwork relays NetworkDB's node events.
 * A SwarmNetworks follower: it reads the cluster's `alive/` records from the same view. The calls
 * run on a queue of their own, so a slow plugin never holds the store's watch back; a call that
 * fails is logged and not repeated, as in Docker.
 */
export class PluginDiscovery {
  private readonly alive = new Map<string, string>();
  private readonly plugins = new Map<string, ActivePlugin>();
  /** What each plugin was told, node by node. */
  private readonly told = new Map<string, Map<string, NodeDiscoveryData>>();
  private readonly queue = new SerialQueue();
  private listed = false;
  private closed = false;
  private readonly off: () => void;

  constructor(manager: PluginManager, private readonly self: () => { id: string; addr: string; dataPathAddr: string }, private readonly log: (m: string) => void) {
    // Activated from here on: told before their first use (the manager waits for this hook).
    this.off = manager.onActivate(async (p) => {
      if (this.closed || !acrossHosts(p)) return;
      this.plugins.set(p.name, p);
      this.told.set(p.name, new Map());
      if (this.listed) await this.queue.run(() => this.sync(p));
    });
    // Activated before this host joined the swarm (or before this berthd's session came up).
    void manager.activated().then((list) => {
      for (const p of list) if (acrossHosts(p) && !this.plugins.has(p.name)) { this.plugins.set(p.name, p); this.told.set(p.name, new Map()); }
      if (this.listed) void this.queue.run(() => this.syncAll());
    });
  }

  /** The nodes present now, as plugins are told of them. */
  private present(): Map<string, NodeDiscoveryData> {
    const me = this.self();
    const out = new Map<string, NodeDiscoveryData>();
    for (const [id, addr] of this.alive) if (id !== me.id && addr) out.set(id, { Address: addr, BindAddress: '', Self: false });
    // This node is present while it is in the swarm, whatever its lease is doing.
    out.set(me.id, { Address: me.dataPathAddr || me.addr, BindAddress: me.addr, Self: true });
    return out;
  }

  async follow(events: WatchEvent<unknown>[], full: boolean): Promise<void> {
    if (full) this.alive.clear();
    let changed = full;
    for (const e of events) {
      if (!e.key.startsWith(ALIVE)) continue;
      const id = e.key.slice(ALIVE.length);
      if (e.type === 'put') this.alive.set(id, (e.value as AliveRecord | undefined)?.Addr ?? '');
      else this.alive.delete(id);
      changed = true;
    }
    this.listed = true;
    if (changed && !this.closed) void this.queue.run(() => this.syncAll());
  }

  private async syncAll(): Promise<void> {
    for (const p of this.plugins.values()) await this.sync(p);
  }

  private async sync(p: ActivePlugin, present = this.present()): Promise<void> {
    const told = this.told.get(p.name) ?? new Map<string, NodeDiscoveryData>();
    this.told.set(p.name, told);
    for (const c of discoveryCalls(told, present)) {
      if (this.closed && c.method === 'DiscoverNew') continue;
      await this.tell(p, c.method, c.data);
      if (c.method === 'DiscoverNew') told.set(c.node, c.data);
      else told.delete(c.node);
    }
  }

  private async tell(p: ActivePlugin, method: string, data: NodeDiscoveryData): Promise<void> {
    try {
      const r = await p.client.call<{ Err?: string }>(`${NETWORK_DRIVER}.${method}`, { DiscoveryType: NODE_DISCOVERY, DiscoveryData: data });
      if (r?.Err) throw new Error(`remote: ${r.Err}`);
    } catch (e) {
      // A plugin without discovery answers 404: nothing to say of it.
      if (!(e instanceof PluginStatusError && e.status === 404)) this.log(`plugin ${p.name}: ${method} ${data.Address}: ${errorMessage(e)}`);
    }
  }

  /**
   * The swarm session ends. Leaving the swarm, every plugin is told every node it knew is gone
   * (this one too); a daemon stop tells nothing, and the next start tells again. A plugin that
   * does not answer holds the leave back a few seconds at most.
   */
  async close(leaving: boolean): Promise<void> {
    this.closed = true;
    this.off();
    const done = this.queue.run(async () => { if (leaving) for (const p of this.plugins.values()) await this.sync(p, new Map()); });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise((r) => { timer = setTimeout(r, CLOSE_WAIT_MS); })]);
    clearTimeout(timer);
  }
}
