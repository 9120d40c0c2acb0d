/**
 * The routing mesh's host table, `ip berth_mesh` in berthd's namespace, built from plain data
 * (pure, unit-tested; kernel/nft.ts applies it): a connection to any local address on a published
 * ingress port is DNATed to this node's ingress sandbox (same port). A port with no element is not
 * touched, so the kernel refuses it (RST or ICMP unreachable): a service removed is refused at once.
 *
 * The balancing itself is elsewhere, in a slot table as a container's VIPs have (lbtable.ts): the
 * ingress sandbox's ports (`ingressKind` in lbkinds.ts), so a backend change there is map elements
 * that berth-nftset writes without `nft`.
 *
 * The table is made whole once (`meshTable`); after that a change is only the elements that
 * differ (`ingressChanges`), whatever the number of other services.
 */

export type Proto = 'tcp' | 'udp';

/** One published port as a balancer sees it: its backends' addresses (tasks) and the port they listen on. */
export interface MeshPort { service: string; proto: Proto; published: number; target: number; backends: string[] }

export const MESH_TABLE = 'berth_mesh';

export const portKey = (p: { proto: Proto; published: number }): string => `${p.proto} . ${p.published}`;

/** The host's table whole: `ingress` ports to the sandbox's address (none while there is no sandbox). */
export function meshTable(sandboxIp: string | undefined, ingress: Array<{ proto: Proto; port: number }>): string {
  const ing = sandboxIp ? [...ingress].sort((a, b) => a.proto.localeCompare(b.proto) || a.port - b.port) : [];
  const rule = '    fib daddr type local dnat ip to meta l4proto . th dport map @ingress';
  return [
    `table ip ${MESH_TABLE} {`,
    '  map ingress {',
    '    type inet_proto . inet_service : ipv4_addr . inet_service',
    ...(ing.length ? [`    elements = { ${ing.map((p) => `${p.proto} . ${p.port} : ${sandboxIp} . ${p.port}`).join(', ')} }`] : []),
    '  }',
    // Before berth's own nat chains (priority -100): the first NAT binding of a connection wins,
    // and a published service port is the cluster's, not a container's.
    '  chain prerouting {',
    '    type nat hook prerouting priority -110; policy accept;',
    rule,
    '  }',
    '  chain output {',
    '    type nat hook output priority -110; policy accept;',
    rule,
    '  }',
    '}',
  ].join('\n') + '\n';
}

/** The script that replaces a table by `text`, or removes it when `text` is empty; idempotent. */
export function replaceScript(table: string, text: string): string {
  return `table ip ${table}\ndelete table ip ${table}\n${text}`;
}

/** The host's ingress map elements from `before` to `after` (port keys), all pointing at `sandboxIp`. */
export function ingressChanges(sandboxIp: string, before: Set<string>, after: Set<string>): string[] {
  const t = `ip ${MESH_TABLE}`;
  return [
    ...[...before].filter((k) => !after.has(k)).sort().map((k) => `delete element ${t} ingress { ${k} }`),
    ...[...after].filter((k) => !before.has(k)).sort().map((k) => `add element ${t} ingress { ${k} : ${sandboxIp} . ${k.split(' . ')[1]} }`),
  ];
}
