import { join } from 'node:path';
import { createNetns, deleteNetns } from '../kernel/netns.js';
import { BadRequestError, NotFoundError } from '../util/errors.js';
import type { ContainerRecord } from '../engine/types.js';

/** What a container's run needs from networking: a namespace to join and the addresses it got. */
export interface SandboxInfo {
  /** undefined: share the daemon's namespace (host mode). */
  netnsPath?: string;
  addresses: string[];
  shareHostNetwork: boolean;
}

export interface EndpointSettings {
  IPAMConfig: unknown;
  Links: string[] | null;
  Aliases: string[] | null;
  NetworkID: string;
  EndpointID: string;
  Gateway: string;
  IPAddress: string;
  IPPrefixLen: number;
  IPv6Gateway: string;
  GlobalIPv6Address: string;
  GlobalIPv6PrefixLen: number;
  MacAddress: string;
  DriverOpts: Record<string, string> | null;
}

export interface NetworkSummary { Name: string; Id: string; Driver: string; Scope: string }

/**
 * Gives containers their network namespaces. The modes of the foundation live here: `none` (own
 * namespace with only loopback) and `host` (the daemon's namespace); `container:` and the bridge
 * drivers plug in beside them.
 */
export class NetworkController {
  /** The pre-defined networks every Docker host has; their ids are stable for this daemon. */
  readonly predefined: NetworkSummary[];

  constructor(private readonly netnsDir: string, ids: { host: string; none: string }) {
    this.predefined = [
      { Name: 'host', Id: ids.host, Driver: 'host', Scope: 'local' },
      { Name: 'none', Id: ids.none, Driver: 'null', Scope: 'local' },
    ];
  }

  /** Checks a NetworkMode at create time, so a bad one fails before anything exists. */
  validateMode(mode: string): void {
    if (mode === 'none' || mode === 'host' || mode === 'default' || mode === 'bridge') return;
    if (mode.startsWith('container:')) {
      throw new BadRequestError('network mode container: is not supported yet');
    }
    throw new NotFoundError(`network ${mode} not found`);
  }

  netnsPathFor(c: ContainerRecord): string {
    return join(this.netnsDir, c.Id.slice(0, 12));
  }

  async setUp(c: ContainerRecord): Promise<SandboxInfo> {
    if (c.HostConfig.NetworkMode === 'host') return { addresses: [], shareHostNetwork: true };
    const path = this.netnsPathFor(c);
    await createNetns(path);
    return { netnsPath: path, addresses: [], shareHostNetwork: false };
  }

  async tearDown(c: ContainerRecord): Promise<void> {
    if (c.NetnsPath) await deleteNetns(c.NetnsPath);
  }

  /** NetworkSettings.Networks entry names for a container. */
  networkName(c: ContainerRecord): string {
    const m = c.HostConfig.NetworkMode;
    return m === 'default' ? 'bridge' : m;
  }

  settings(c: ContainerRecord): object {
    const name = this.networkName(c);
    const net = this.predefined.find((n) => n.Name === name);
    const endpoint: EndpointSettings = {
      IPAMConfig: null, Links: null, Aliases: null,
      NetworkID: net?.Id ?? '', EndpointID: '', Gateway: '', IPAddress: '', IPPrefixLen: 0,
      IPv6Gateway: '', GlobalIPv6Address: '', GlobalIPv6PrefixLen: 0, MacAddress: '', DriverOpts: null,
    };
    return {
      Bridge: '',
      SandboxID: c.NetnsPath ? c.Id : '',
      HairpinMode: false,
      LinkLocalIPv6Address: '',
      LinkLocalIPv6PrefixLen: 0,
      Ports: {},
      SandboxKey: c.NetnsPath,
      SecondaryIPAddresses: null,
      SecondaryIPv6Addresses: null,
      EndpointID: '', Gateway: '', GlobalIPv6Address: '', GlobalIPv6PrefixLen: 0,
      IPAddress: '', IPPrefixLen: 0, IPv6Gateway: '', MacAddress: '',
      Networks: { [name]: endpoint },
    };
  }
}
