import { etherKey, ifnameKey, ipv4Key, setElements, type SetElementOp } from '../kernel/nftelements.js';
import { nftSetElements } from '../kernel/nft.js';
import { TABLE } from './firewall.js';

/**
 * The source guard of overlay networks. An overlay endpoint is a macvlan child of the network's
 * VXLAN device (overlaydriver.ts), so every frame a container of this host or another one sends
 * on the network enters the VXLAN device's receive path: a child's frame for a child of the same
 * host is handed to the device (macvlan's bridge mode), and a remote one arrives decapsulated.
 * One chain on the device's ingress therefore sees all of them, with no bridge port to tell them
 * apart:
 *  - a frame may come only from a (MAC, IPv4) pair the network has: an endpoint of this host or
 *    of another, as the cluster store records it, in ARP and in IPv4 (an ARP probe from 0.0.0.0
 *    too for this host's own); nothing else (IPv6, which overlays do not carry; VLAN tags) enters;
 *  - the host's own frames (the network's gateway, forwarded traffic of any source, the ingress
 *    endpoint) carry a mark the host's link sets on its way out; a mark never crosses a namespace,
 *    so no container can send one, and the wire's frames have none.
 * That a container sends only as itself (not as another endpoint of the same network) is checked
 * where it is still known who sent: on its own link, in its namespace (`containerGuardScript`).
 */

const T = `netdev ${TABLE}`;
/** The mark the host's link on an overlay puts on its frames (a bit berth's other marks leave free). */
export const HOST_FRAME_MARK = 0x00200000;
const hex = (n: number) => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

/** The table, its set and the shared rules; idempotent, the elements stay. */
export function overlayGuardScript(): string {
  return [
    `add table ${T}`,
    `add set ${T} src4 { type ifname . ether_addr . ipv4_addr; }`,
    `add chain ${T} guard`,
    `flush chain ${T} guard`,
    `add rule ${T} guard meta mark & ${hex(HOST_FRAME_MARK)} == ${hex(HOST_FRAME_MARK)} meta mark set meta mark & ${hex(~HOST_FRAME_MARK)} accept`,
    `add rule ${T} guard ether type arp iifname . arp saddr ether . arp saddr ip @src4 accept`,
    `add rule ${T} guard ether type ip iifname . ether saddr . ip saddr @src4 accept`,
    // Overlays carry no IPv6: a container's link-local chatter (DAD, MLD) is dropped, not counted as spoofing.
    `add rule ${T} guard ether type ip6 drop`,
    `add rule ${T} guard counter drop comment "spoofed"`,
  ].join('\n') + '\n';
}

/**
 * A base chain bound to a device. For a new device it is made afresh: a chain whose device was
 * deleted stays in the table without a hook, and adding it again would not bind it to the new
 * device of that name. For a device that was there, only its rules are written again (in the same
 * transaction, so no frame ever meets the chain half-written); replacing the chain itself then
 * would unhook it for a moment from a device carrying traffic.
 */
function boundChain(table: string, chain: string, hook: 'ingress' | 'egress', dev: string, rules: string[], fresh: boolean): string[] {
  const spec = `{ type filter hook ${hook} device "${dev}" priority -500; policy accept; }`;
  return [
    ...(fresh ? dropChain(table, chain, spec) : []),
    `add chain ${table} ${chain} ${spec}`, `flush chain ${table} ${chain}`, ...rules.map((r) => `add rule ${table} ${chain} ${r}`),
  ];
}

/** Deletes a chain in a transaction whether it exists or not: made first (with `spec`, if given), emptied, deleted. */
function dropChain(table: string, chain: string, spec = ''): string[] {
  return [`add chain ${table} ${chain}${spec ? ` ${spec}` : ''}`, `flush chain ${table} ${chain}`, `delete chain ${table} ${chain}`];
}

const inChain = (vx: string) => `in_${vx}`;
const outChain = (dev: string) => `out_${dev}`;

/**
 * A network's chains: the VXLAN device's ingress guarded, the host's link marking its frames, and
 * the mark kept off the wire. `fresh` says which devices were just made.
 */
export function networkGuardScript(vx: string, hostLink: string, fresh: { vx: boolean; hostLink: boolean }): string {
  return [
    ...boundChain(T, inChain(vx), 'ingress', vx, ['jump guard'], fresh.vx),
    ...boundChain(T, outChain(hostLink), 'egress', hostLink, [`meta mark set meta mark | ${hex(HOST_FRAME_MARK)}`], fresh.hostLink),
    ...boundChain(T, outChain(vx), 'egress', vx, [`meta mark set meta mark & ${hex(~HOST_FRAME_MARK)}`], fresh.vx),
  ].join('\n') + '\n';
}

/** Removes a network's chains (each made first, so one already gone is no error). */
export function dropNetworkGuardScript(vx: string, hostLink: string): string {
  return [inChain(vx), outChain(hostLink), outChain(vx)].flatMap((c) => dropChain(T, c)).join('\n') + '\n';
}

/** The pairs a network's device lets in, keyed by the device; `probe` adds an endpoint's ARP probe (this host's own). */
export function pairOps(vx: string, pairs: Array<{ mac: string; ip: string }>, op: 'add' | 'delete', probe = false): SetElementOp[] {
  const dev = ifnameKey(vx);
  return pairs.flatMap((p) => {
    const mac = etherKey(p.mac);
    const keys = [Buffer.concat([dev, mac, ipv4Key(p.ip)])];
    if (probe) keys.push(Buffer.concat([dev, mac, ipv4Key('0.0.0.0')]));
    return keys.map((key): SetElementOp => ({ op, set: 'src4', key }));
  });
}

/** Writes pair elements in one transaction. */
export function writePairs(ops: SetElementOp[]): Promise<void> {
  return setElements('netdev', TABLE, ops);
}

/** The (MAC, IPv4) pairs a network's device lets in, as the kernel has them (which survive a restart). */
export async function guardedPairs(vx: string): Promise<Array<{ mac: string; ip: string; probe: boolean }>> {
  const all = (await nftSetElements('netdev', TABLE, 'src4')).filter((c): c is string[] => Array.isArray(c) && c[0] === vx);
  const probes = new Set(all.filter((c) => c[2] === '0.0.0.0').map((c) => c[1]!.toLowerCase()));
  return all.filter((c) => c[2] !== '0.0.0.0').map((c) => ({ mac: c[1]!, ip: c[2]!, probe: probes.has(c[1]!.toLowerCase()) }));
}

/**
 * The chain of a container's guard, by its link's name: a chain whose link went (a disconnect)
 * stays in the container's table without a hook, doing nothing, and the next overlay link of that
 * name replaces it. Removing it at the disconnect would cost the disconnect an `nft` run.
 */
export const containerGuardChain = (ifname: string) => `out_${ifname}`;

/**
 * The guard on a container's own link, in its namespace: it sends only from its MAC and address
 * (ARP included, and an ARP probe). The hook is the link's egress, which packet sockets pass too,
 * qdisc bypass or not; a container without CAP_NET_ADMIN cannot change it.
 */
export function containerGuardScript(ifname: string, mac: string, ip: string): string {
  return [
    `add table ${T}`,
    ...boundChain(T, containerGuardChain(ifname), 'egress', ifname, [
      `ether saddr != ${mac} counter drop comment "spoofed-mac"`,
      `ether type arp arp saddr ether ${mac} arp saddr ip { ${ip}, 0.0.0.0 } accept`,
      `ether type ip ip saddr ${ip} accept`,
      'ether type ip6 drop',
      'counter drop comment "spoofed"',
    ], true),
  ].join('\n') + '\n';
}
