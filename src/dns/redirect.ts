import { nftApply } from '../kernel/nft.js';

/**
 * The table `ip berth_dns` inside a container's namespace: Docker's resolver address 127.0.0.11:53
 * is DNATed to `target` (berth's listener), with `postrouting` rules where the target needs them.
 */
export function dnsRedirectTable(target: string, postrouting: string[] = []): string {
  return [
    'table ip berth_dns',
    'delete table ip berth_dns',
    'table ip berth_dns {',
    '  chain output {',
    '    type nat hook output priority -100; policy accept;',
    `    ip daddr 127.0.0.11 udp dport 53 dnat to ${target}`,
    `    ip daddr 127.0.0.11 tcp dport 53 dnat to ${target}`,
    '  }',
    ...(postrouting.length ? ['  chain postrouting {', '    type nat hook postrouting priority 100; policy accept;', ...postrouting.map((r) => `    ${r}`), '  }'] : []),
    '}',
    '',
  ].join('\n');
}

/**
 * Bridge networks: the target is berth's DNS listener on the network gateway. The query leaves
 * with a loopback source, so it is rewritten to the container's address, which route_localnet (on
 * this namespace only) allows to be routed.
 */
export function redirectRules(gateway: string, port: number, containerIp: string): string {
  return dnsRedirectTable(`${gateway}:${port}`, [
    `ip saddr 127.0.0.0/8 ip daddr ${gateway} udp dport ${port} snat to ${containerIp}`,
    `ip saddr 127.0.0.0/8 ip daddr ${gateway} tcp dport ${port} snat to ${containerIp}`,
  ]);
}

export async function programRedirect(netnsPath: string, gateway: string, port: number, containerIp: string): Promise<void> {
  await nftApply(redirectRules(gateway, port, containerIp), { netns: netnsPath, sysctls: ['net.ipv4.conf.all.route_localnet=1'] });
}
