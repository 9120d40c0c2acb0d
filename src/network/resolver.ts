import { nftApply } from '../kernel/nft.js';
import { RESOLVER_ADDRESS } from '../model/network.js';

/**
 * The embedded DNS as a sandbox sees it: sockets on 127.0.0.11 inside the container's namespace,
 * served by berthd. The DNS server implements it; the daemon hands it to the network layer, which
 * never imports the DNS code.
 */
export interface Resolver {
  /** Opens (or keeps) the container's resolver sockets inside its namespace (on `preferPort` if free); returns their port. */
  serveSandbox(containerId: string, netnsPath: string, preferPort?: number): number;
  hasSandbox(containerId: string): boolean;
  closeSandbox(containerId: string): void;
  closeAll(): void;
  /** Answers may have changed for the members of these networks and these containers. */
  directoryChanged(scope: { networks: string[]; containers: string[] }): void;
}

/**
 * Inside the container's namespace, 127.0.0.11:53 is sent to the resolver's own port on the same
 * address, as Docker does, so a process in the container may still bind port 53 for itself. Unlike
 * Docker's DNAT this is a stateless rewrite of the port, both ways, ahead of conntrack (`notrack`):
 * a query costs no conntrack entry (nothing fills the host-wide conntrack table, and there is no
 * insertion race between the A and AAAA queries a libc sends at once from one socket, the cause of
 * the well-known 5 s DNS stalls behind DNAT), and with no NAT rule the namespace registers no
 * conntrack hooks at all. The reply rule matches only the resolver's own socket: berthd holds its port.
 */
export function sandboxRedirectRules(port: number, newNamespace = false): string {
  return [
    // Replacing a table costs the kernel 6-19 ms here (its hooks go through RCU); a namespace made
    // moments ago has none to replace.
    ...(newNamespace ? [] : ['table ip berth_dns', 'delete table ip berth_dns']),
    'table ip berth_dns {',
    '  chain output {',
    `    ${HOOK}`,
    ...redirectRules(port).map((r) => `    ${r}`),
    '  }',
    '}',
    '',
  ].join('\n');
}

const HOOK = 'type filter hook output priority raw; policy accept;';

function redirectRules(port: number): string[] {
  const a = RESOLVER_ADDRESS;
  return [
    `ip daddr ${a} udp dport 53 notrack udp dport set ${port}`,
    `ip saddr ${a} udp sport ${port} notrack udp sport set 53`,
    `ip daddr ${a} tcp dport 53 notrack tcp dport set ${port}`,
    `ip saddr ${a} tcp sport ${port} notrack tcp sport set 53`,
  ];
}

/**
 * The same table in a namespace that may hold it already: the table and its hooked chain declared
 * (kept when there), the chain's rules replaced. No hook is unregistered, so nothing waits for
 * RCU, as replacing the table would.
 */
export function sandboxRedirectUpdate(port: number): string {
  return [
    'add table ip berth_dns',
    `add chain ip berth_dns output { ${HOOK} }`,
    'flush chain ip berth_dns output',
    ...redirectRules(port).map((r) => `add rule ip berth_dns output ${r}`),
    '',
  ].join('\n');
}

export async function programSandboxRedirect(netnsPath: string, port: number, newNamespace = false): Promise<void> {
  if (newNamespace) return nftApply(sandboxRedirectRules(port, true), { netns: netnsPath });
  // A chain of another shape (an older berth's) cannot be declared over: the table is replaced.
  await nftApply(sandboxRedirectUpdate(port), { netns: netnsPath }).catch(() => nftApply(sandboxRedirectRules(port, false), { netns: netnsPath }));
}
