import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { runOk } from '../util/exec.js';

/**
 * Inside a container's own namespace: send Docker's resolver address 127.0.0.11:53 to berth's DNS
 * listener on the network gateway. The query leaves with a loopback source, so it is rewritten to
 * the container's address, which route_localnet (on this namespace only) allows to be routed.
 */
export function redirectRules(gateway: string, port: number, containerIp: string): string {
  return [
    'table ip berth_dns',
    'delete table ip berth_dns',
    'table ip berth_dns {',
    '  chain output {',
    '    type nat hook output priority -100; policy accept;',
    `    ip daddr 127.0.0.11 udp dport 53 dnat to ${gateway}:${port}`,
    `    ip daddr 127.0.0.11 tcp dport 53 dnat to ${gateway}:${port}`,
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority 100; policy accept;',
    `    ip saddr 127.0.0.0/8 ip daddr ${gateway} udp dport ${port} snat to ${containerIp}`,
    `    ip saddr 127.0.0.0/8 ip daddr ${gateway} tcp dport ${port} snat to ${containerIp}`,
    '  }',
    '}',
    '',
  ].join('\n');
}

export async function programRedirect(netnsPath: string, scratchDir: string, gateway: string, port: number, containerIp: string): Promise<void> {
  // One file per container: two containers starting at once must not read each other's rules.
  const file = join(scratchDir, `dns-${netnsPath.split('/').pop()}.nft`);
  await fs.writeFile(file, redirectRules(gateway, port, containerIp));
  try {
    await runOk('nsenter', [`--net=${netnsPath}`, 'sh', '-c', `sysctl -qw net.ipv4.conf.all.route_localnet=1 && nft -f ${file}`]);
  } finally {
    await fs.rm(file, { force: true });
  }
}

export async function removeRedirect(netnsPath: string): Promise<void> {
  await runOk('nsenter', [`--net=${netnsPath}`, 'sh', '-c', 'nft list table ip berth_dns >/dev/null 2>&1 && nft delete table ip berth_dns || true']);
}
