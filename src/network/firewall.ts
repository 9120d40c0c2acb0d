/**
 * berth's nftables rules for bridge networks, built as text from plain data so they can be checked
 * without a kernel. Everything lives in berth's own table (`ip berth`), replaced atomically on
 * every change; no other table is read or written. Rules grow with the number of networks, never
 * with the number of containers.
 */

export interface BridgeRules {
  bridge: string;
  subnets: string[];
  internal: boolean;
  masquerade: boolean;
  icc: boolean;
}

export const TABLE = 'berth';

function q(name: string): string {
  return `"${name.replace(/"/g, '')}"`;
}

export function buildRuleset(networks: BridgeRules[]): string {
  const bridges = networks.map((n) => q(n.bridge));
  const forward: string[] = [];
  const l2: string[] = [];
  const nat: string[] = [];
  for (const n of networks) {
    const br = q(n.bridge);
    if (n.internal) {
      // An internal network carries nothing in or out, only between its own containers.
      forward.push(`iifname ${br} oifname != ${br} drop`);
      forward.push(`oifname ${br} iifname != ${br} drop`);
    } else {
      // Isolation: a bridge never forwards to another berth bridge.
      forward.push(`iifname ${br} oifname @bridges oifname != ${br} drop`);
    }
    if (!n.icc) l2.push(`meta ibrname ${br} drop`);
    if (n.masquerade && !n.internal) {
      for (const s of n.subnets) nat.push(`ip saddr ${s} oifname != ${br} masquerade`);
    }
  }
  const lines = [
    `table ip ${TABLE}`,
    `delete table ip ${TABLE}`,
    `table ip ${TABLE} {`,
    `  set bridges {`,
    `    type ifname`,
    ...(bridges.length ? [`    elements = { ${bridges.join(', ')} }`] : []),
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    ...forward.map((r) => `    ${r}`),
    `  }`,
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    ...nat.map((r) => `    ${r}`),
    `  }`,
    `}`,
    `table bridge ${TABLE}`,
    `delete table bridge ${TABLE}`,
    `table bridge ${TABLE} {`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    ...l2.map((r) => `    ${r}`),
    `  }`,
    `}`,
  ];
  return lines.join('\n') + '\n';
}
