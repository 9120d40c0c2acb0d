/**
 * The routing mesh's nftables text, built from plain data (pure, unit-tested; kernel/nft.ts
 * applies it). Two tables, each rewritten whole in one transaction when what it should hold
 * changes (`table; delete table; table {…}`: live connections keep their conntrack NAT bindings):
 *
 * - `ip berth_mesh` in berthd's namespace: a connection to any local address on a published
 *   ingress port is DNATed to this node's ingress sandbox (same port); one on a host-mode port
 *   goes straight to a local task (Docker's `mode=host`). A port with no element is not touched,
 *   so the kernel refuses it (RST or ICMP unreachable): a service removed is refused at once.
 * - `ip berth_ingress` in the ingress sandbox: a verdict map from protocol and port to the
 *   service's chain, which picks a running task's ingress address with `numgen random`
 *   (kube-proxy's nftables mode) and DNATs to it on the target port; every balanced connection is
 *   SNATed to the sandbox's own ingress address, so the task's reply comes back through this node
 *   whichever node the task runs on. A port with no running task has no element: the sandbox
 *   itself refuses it.
 */

export type Proto = 'tcp' | 'udp';

/** One published port as a balancer sees it: its backends' addresses (tasks) and the port they listen on. */
export interface MeshPort { service: string; proto: Proto; published: number; target: number; backends: string[] }

export const MESH_TABLE = 'berth_mesh';
export const SANDBOX_TABLE = 'berth_ingress';

const chainOf = (prefix: string, p: MeshPort) => `${prefix}_${p.service.slice(0, 12)}_${p.proto}_${p.published}`;
const sorted = (ports: MeshPort[]) => [...ports].sort((a, b) => a.proto.localeCompare(b.proto) || a.published - b.published);

/** A chain per port choosing a backend: one DNAT, or numgen over one chain per backend. */
function balancer(prefix: string, p: MeshPort): string[] {
  const name = chainOf(prefix, p);
  const backends = [...new Set(p.backends)].sort();
  // A port mapping needs the protocol matched in the same rule.
  const dnat = (b: string) => `meta l4proto ${p.proto} dnat ip to ${b}:${p.target}`;
  if (backends.length === 1) return [`  chain ${name} {`, `    ${dnat(backends[0]!)}`, '  }'];
  return [
    `  chain ${name} {`,
    `    numgen random mod ${backends.length} vmap { ${backends.map((_, i) => `${i} : goto ${name}_${i}`).join(', ')} }`,
    '  }',
    ...backends.flatMap((b, i) => [`  chain ${name}_${i} {`, `    ${dnat(b)}`, '  }']),
  ];
}

function elements(list: string[]): string[] {
  return list.length ? [`    elements = { ${list.join(', ')} }`] : [];
}

/**
 * The host's table: `ingress` ports to the sandbox's address (when there is one), `host` ports to
 * this node's own tasks. Empty input gives '' (no table).
 */
export function meshTable(sandboxIp: string | undefined, ingress: Array<{ proto: Proto; port: number }>, host: MeshPort[]): string {
  const ing = sandboxIp ? [...ingress].sort((a, b) => a.proto.localeCompare(b.proto) || a.port - b.port) : [];
  const hp = sorted(host).filter((p) => p.backends.length);
  if (!ing.length && !hp.length) return '';
  const rules = [
    '    fib daddr type local dnat ip to meta l4proto . th dport map @ingress',
    '    fib daddr type local meta l4proto . th dport vmap @hostports',
  ];
  return [
    `table ip ${MESH_TABLE} {`,
    '  map ingress {',
    '    type inet_proto . inet_service : ipv4_addr . inet_service',
    ...elements(ing.map((p) => `${p.proto} . ${p.port} : ${sandboxIp} . ${p.port}`)),
    '  }',
    '  map hostports {',
    '    type inet_proto . inet_service : verdict',
    ...elements(hp.map((p) => `${p.proto} . ${p.published} : goto ${chainOf('hp', p)}`)),
    '  }',
    // Before berth's own nat chains (priority -100): the first NAT binding of a connection wins,
    // and a published service port is the cluster's, not a container's.
    '  chain prerouting {',
    '    type nat hook prerouting priority -110; policy accept;',
    ...rules,
    '  }',
    '  chain output {',
    '    type nat hook output priority -110; policy accept;',
    ...rules,
    '  }',
    ...hp.flatMap((p) => balancer('hp', p)),
    '}',
  ].join('\n') + '\n';
}

/** The ingress sandbox's table: published ports balanced over running tasks' ingress addresses, SNATed to `sandboxIp`. */
export function sandboxTable(sandboxIp: string, ports: MeshPort[]): string {
  const live = sorted(ports).filter((p) => p.backends.length);
  return [
    `table ip ${SANDBOX_TABLE} {`,
    '  map ports {',
    '    type inet_proto . inet_service : verdict',
    ...elements(live.map((p) => `${p.proto} . ${p.published} : goto ${chainOf('s', p)}`)),
    '  }',
    '  chain prerouting {',
    '    type nat hook prerouting priority -100; policy accept;',
    `    ip daddr ${sandboxIp} meta l4proto . th dport vmap @ports`,
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority 100; policy accept;',
    `    ct status dnat snat to ${sandboxIp}`,
    '  }',
    ...live.flatMap((p) => balancer('s', p)),
    '}',
  ].join('\n') + '\n';
}

/** The script that replaces a table by `text`, or removes it when `text` is empty; idempotent. */
export function replaceScript(table: string, text: string): string {
  return `table ip ${table}\ndelete table ip ${table}\n${text}`;
}
