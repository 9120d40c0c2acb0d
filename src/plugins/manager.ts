import { ApiError, NotFoundError } from '../util/errors.js';
import { PluginClient, PluginStatusError } from './client.js';
import { BadSpecError, findPlugin, type PluginPaths } from './discovery.js';

export const NETWORK_DRIVER = 'NetworkDriver';
export const IPAM_DRIVER = 'IpamDriver';

export interface PluginOptions {
  paths: PluginPaths;
  /** See ClientOptions.retryMs (Docker: 30 s). */
  retryMs: number;
  /** See ClientOptions.callTimeoutMs. */
  callTimeoutMs: number;
}

/** What a network driver plugin said at activation (NetworkDriver.GetCapabilities). */
export interface NetworkCapabilities { Scope: 'local' | 'global'; ConnectivityScope?: string }
/** What an IPAM plugin said (IpamDriver.GetCapabilities; absent when it has no such call). */
export interface IpamCapabilities { RequiresMACAddress?: boolean; RequiresRequestReplay?: boolean }

export interface ActivePlugin {
  name: string;
  client: PluginClient;
  implements: string[];
  network?: NetworkCapabilities;
  ipam?: IpamCapabilities;
}

/**
 * Any error of a plugin call as the API answers it: Docker's words (`Method: Err`, `remote: Err`,
 * or why it could not be reached), led by the plugin's name, with Docker's 500.
 */
export function pluginError(name: string, e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  return new ApiError(500, `plugin "${name}": ${e instanceof Error ? e.message : String(e)}`);
}

/**
 * Docker's legacy plugins, found and activated on first use (`/Plugin.Activate`, then each
 * implemented subsystem's handshake, as libnetwork's remote driver and IPAM register themselves).
 * An activation that fails is forgotten, so the next use tries again; one that succeeded is kept,
 * and its calls find the plugin again each time (a plugin that restarts is used again).
 */
export class PluginManager {
  private readonly active = new Map<string, Promise<ActivePlugin>>();
  private readonly hooks: Array<(p: ActivePlugin) => Promise<void>> = [];

  constructor(readonly o: PluginOptions) {}

  /** The plugin `name`, activated, implementing `kind`; Docker's 404 when it is nowhere. */
  async get(name: string, kind: string): Promise<ActivePlugin> {
    let p = this.active.get(name);
    if (!p) {
      p = this.activate(name);
      this.active.set(name, p);
      p.catch(() => { if (this.active.get(name) === p) this.active.delete(name); });
    }
    const plugin = await p;
    if (!plugin.implements.includes(kind)) throw new NotFoundError(`plugin "${name}" not found`);
    return plugin;
  }

  /**
   * Runs at each activation, before the plugin is handed to its first user, as libnetwork's
   * RegisterDriver tells a new driver of the cluster's nodes before anything uses it. A hook
   * that fails is logged: the plugin stays usable, as in Docker.
   */
  onActivate(hook: (p: ActivePlugin) => Promise<void>): () => void {
    this.hooks.push(hook);
    return () => { const i = this.hooks.indexOf(hook); if (i >= 0) this.hooks.splice(i, 1); };
  }

  /** Plugins activated so far. */
  async activated(): Promise<ActivePlugin[]> {
    const all = await Promise.all([...this.active.values()].map((p) => p.catch(() => undefined)));
    return all.filter((p): p is ActivePlugin => !!p);
  }

  private async activate(name: string): Promise<ActivePlugin> {
    let found;
    try {
      found = await findPlugin(name, this.o.paths);
    } catch (e) {
      if (e instanceof BadSpecError) throw new ApiError(500, `plugin "${name}": ${e.message}`);
      throw e;
    }
    // Docker does not retry a plugin that is nowhere (pkg/plugins loadWithRetry).
    if (!found) throw new NotFoundError(`plugin "${name}" not found`);
    let plugin: ActivePlugin;
    const client = new PluginClient(name, {
      retryMs: this.o.retryMs, callTimeoutMs: this.o.callTimeoutMs,
      resolve: async () => (await findPlugin(name, this.o.paths).catch(() => undefined))?.addr,
    });
    try {
      const manifest = await client.call<{ Implements?: unknown }>('Plugin.Activate', undefined);
      const implementsList = Array.isArray(manifest.Implements) ? manifest.Implements.filter((x): x is string => typeof x === 'string') : [];
      plugin = { name, client, implements: implementsList };
      for (const kind of implementsList) {
        if (kind === NETWORK_DRIVER) {
          const caps = await client.call<{ Scope?: string; ConnectivityScope?: string; Err?: string }>(`${NETWORK_DRIVER}.GetCapabilities`, undefined);
          if (caps.Err) throw new Error(`remote: ${caps.Err}`);
          if (caps.Scope !== 'local' && caps.Scope !== 'global') throw new Error(`invalid capability: expecting 'local' or 'global', got ${caps.Scope ?? ''}`);
          plugin.network = { Scope: caps.Scope, ...(caps.ConnectivityScope ? { ConnectivityScope: caps.ConnectivityScope } : {}) };
        } else if (kind === IPAM_DRIVER) {
          try {
            plugin.ipam = await client.call<IpamCapabilities>(`${IPAM_DRIVER}.GetCapabilities`, undefined);
          } catch (e) {
            // An IPAM plugin older than capabilities: registered without them, as Docker does.
            if (!(e instanceof PluginStatusError && e.status === 404)) throw e;
            plugin.ipam = {};
          }
        }
      }
    } catch (e) {
      throw pluginError(name, e);
    }
    for (const hook of [...this.hooks]) await hook(plugin).catch((e: Error) => console.error(`berthd: plugin ${name}: ${e.message}`));
    return plugin;
  }
}
