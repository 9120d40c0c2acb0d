import { nativeAddon } from '../util/cjs.js';

/**
 * Elements of berthd's own nftables sets, written over netlink by the addon
 * (native/berth-nftelems.c) in one transaction, without `nft` (which parses each command and
 * brings its cache up to date with the kernel first). The keys are the bytes the kernel stores:
 * a concatenation's parts each padded to 4 bytes, as nftables lays out its registers.
 */
export interface SetElementOp { op: 'add' | 'delete'; set: string; key: Buffer }

const addon = nativeAddon<{ setElements(family: string, table: string, ops: SetElementOp[]): Promise<void> }>('berth-netns.node', 'nftables set elements');

/** Adds and deletes elements in one transaction: all of them or none. An add of an element already there is no failure; a delete of one absent is. */
export async function setElements(family: 'ip' | 'ip6' | 'inet' | 'bridge' | 'netdev', table: string, ops: SetElementOp[]): Promise<void> {
  if (!ops.length) return;
  await addon().setElements(family, table, ops).catch((e: Error) => { throw new Error(`nftables ${family} ${table}: ${e.message}`); });
}

/** An interface name as `ifname` (16 bytes, zero-padded). */
export function ifnameKey(name: string): Buffer {
  const b = Buffer.alloc(16);
  if (Buffer.byteLength(name) > 15) throw new Error(`interface name too long: ${name}`);
  b.write(name, 'utf8');
  return b;
}

/** A MAC as `ether_addr` in a concatenation (6 bytes, padded to 8). */
export function etherKey(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) throw new Error(`invalid MAC address: ${mac}`);
  const b = Buffer.alloc(8);
  parts.forEach((p, i) => { b[i] = parseInt(p, 16); });
  return b;
}

/** An IPv4 address as `ipv4_addr` (4 bytes, network order). */
export function ipv4Key(ip: string): Buffer {
  const o = ip.split('.').map(Number);
  if (o.length !== 4 || o.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`invalid IPv4 address: ${ip}`);
  return Buffer.from(o);
}
