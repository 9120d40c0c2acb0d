import { etherKey, ifnameKey, ipv4Key, setElements, type SetElementOp } from '../kernel/nftelements.js';
import { ipv6Bytes } from '../util/ipv6.js';
import { linkLocalOf, TABLE, type EndpointSource } from './firewall.js';

/**
 * The source guard's set elements (firewall.ts describes the sets) as netlink writes rather than
 * `nft` commands: on an overlay host every endpoint that comes or goes elsewhere is a guard change,
 * and `nft` made that most of the host's part of a `run` or `connect`.
 */

function sourceKeys(e: EndpointSource): Array<{ set: string; key: Buffer }> {
  const port = ifnameKey(e.port);
  const mac = etherKey(e.mac);
  const out = [
    { set: 'macs', key: Buffer.concat([port, mac]) },
    { set: 'src4', key: Buffer.concat([port, mac, ipv4Key(e.ip)]) },
    { set: 'src4', key: Buffer.concat([port, mac, ipv4Key('0.0.0.0')]) },
  ];
  // src6 matches the source address (`ipv6_addr`) and nd6 a neighbour advertisement's target (a
  // raw 128-bit payload match): the same 16 bytes in network order.
  for (const ip6 of [linkLocalOf(e.mac), ...(e.ip6 ? [e.ip6] : [])]) {
    const key = Buffer.concat([port, mac, ipv6Bytes(ip6)]);
    out.push({ set: 'src6', key }, { set: 'nd6', key });
  }
  return out;
}

const as = (op: 'add' | 'delete') => (k: { set: string; key: Buffer }): SetElementOp => ({ op, ...k });

/** An endpoint's allowances, then its port under the guard (never guarded without them). */
export function allowSourceOps(e: EndpointSource): SetElementOp[] {
  return [...sourceKeys(e).map(as('add')), { op: 'add', set: 'ports', key: ifnameKey(e.port) }];
}

/** An endpoint's port out of the guard, then its allowances. */
export function revokeSourceOps(e: EndpointSource): SetElementOp[] {
  return [{ op: 'delete', set: 'ports', key: ifnameKey(e.port) }, ...sourceKeys(e).map(as('delete'))];
}

/**
 * The VXLAN port of an overlay bridge carries the frames of every remote endpoint: it is guarded
 * like a container's port, with one allowance per remote endpoint (its MAC and address, as the
 * cluster store records them), so a host can only inject frames as the endpoints it really hosts.
 * The port is put under the guard once, with no allowance: until the store names an endpoint,
 * nothing from the wire enters the bridge.
 */
export function remoteSourceOps(port: string, sources: Array<{ mac: string; ip: string }>, op: 'add' | 'delete'): SetElementOp[] {
  return sources.flatMap((s) => sourceKeys({ port, mac: s.mac, ip: s.ip })).map(as(op));
}

/** A port under the guard, or out of it. */
export function portOp(port: string, op: 'add' | 'delete'): SetElementOp {
  return { op, set: 'ports', key: ifnameKey(port) };
}

/** Writes guard elements in one transaction. */
export function writeGuard(ops: SetElementOp[]): Promise<void> {
  return setElements('bridge', TABLE, ops);
}
