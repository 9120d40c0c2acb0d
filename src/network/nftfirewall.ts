import { nftApply, nftCommands, nftDeleteTable } from '../kernel/nft.js';
import type { PortMapping } from '../model/network.js';
import { OPT_MASQ, optBool } from './options.js';
import { addNetworkScript, buildRuleset, deleteNetworkScript, portElements, TABLE, type BridgeRules } from './firewall.js';
import type { Firewall, FirewallEndpoint } from './firewallapi.js';
import type { NetworkRecord } from './types.js';

/** What the rule text needs of a network record. */
export function bridgeRules(n: NetworkRecord): BridgeRules {
  return {
    id: n.Id, bridge: n.bridge!, subnets: (n.pools ?? []).map((p) => p.subnet), subnets6: (n.pools6 ?? []).map((p) => p.subnet), internal: n.Internal,
    masquerade: optBool(n.Options[OPT_MASQ], true),
  };
}

/** berth's nftables tables (firewall.ts builds the text; this applies it through the kernel layer). */
export class NftFirewall implements Firewall {
  async sync(networks: NetworkRecord[], ports: PortMapping[]): Promise<void> {
    await nftApply(buildRuleset(networks.map(bridgeRules), ports));
  }

  async addNetwork(n: NetworkRecord, others: NetworkRecord[]): Promise<void> {
    await nftCommands(addNetworkScript(bridgeRules(n), others.map(bridgeRules)));
  }

  async removeNetwork(n: NetworkRecord, remaining: NetworkRecord[]): Promise<void> {
    await nftCommands(deleteNetworkScript(bridgeRules(n), remaining.map(bridgeRules)));
  }

  async endpointJoined(_n: NetworkRecord, _ep: FirewallEndpoint): Promise<void> {
    // No per-endpoint rules yet: isolation is per network, ports are map elements.
  }

  async endpointLeft(_n: NetworkRecord, _ep: FirewallEndpoint): Promise<void> {
    // See endpointJoined.
  }

  async addPorts(mappings: PortMapping[]): Promise<void> {
    if (mappings.length) await nftCommands(portElements(mappings, 'add'));
  }

  async removePorts(mappings: PortMapping[]): Promise<void> {
    if (mappings.length) await nftCommands(portElements(mappings, 'delete'));
  }

  async removeAll(): Promise<string[]> {
    const problems: string[] = [];
    // netdev: the overlay networks' source guard (overlayguard.ts).
    for (const family of ['ip', 'bridge', 'ip6', 'netdev']) {
      await nftDeleteTable(family, TABLE).catch((e: Error) => problems.push(e.message));
    }
    return problems;
  }
}
