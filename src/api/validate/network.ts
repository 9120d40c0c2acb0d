import { isIPv4, isIPv6 } from 'node:net';
import { BadRequestError, ForbiddenError } from '../../util/errors.js';
import { parseIPv4 } from '../../network/ipam.js';
import { parseIPv6 } from '../../network/ipam6.js';
import { checkGoJson } from './gojson.js';
import { NETWORK_CREATE } from './schemas.js';

/**
 * POST /networks/create, checked at the API edge before the controller sees it, in Docker
 * 20.10's order (daemon/network.go getIpamConfig, then libnetwork's IpamConf.Validate and
 * ipamAllocateVersion). Where Docker 20.10 answers bad input with a 500 (an untyped error), berth
 * answers 400 with the same words: the words are what clients and users match on, and a 5xx for a
 * client's mistake makes retrying clients retry.
 */
export function validateNetworkCreate(body: Record<string, unknown>): void {
  checkGoJson(body, NETWORK_CREATE);
  const name = body.Name;
  // libnetwork's config.IsValidName: anything but blank. (berth's controller is stricter still,
  // see docs/compatibility.md.)
  // runconfig.IsPreDefinedNetwork comes first in daemon.createNetwork, before any duplicate check.
  if (typeof name === 'string' && PREDEFINED_NAMES.includes(name)) throw new ForbiddenError(`operation is not permitted on predefined ${name} network `);
  if (typeof name !== 'string' || name.trim() === '') throw new BadRequestError(`invalid name: ${typeof name === 'string' ? name : ''}`);
  const opts = (body.Options ?? {}) as Record<string, string>;
  const bridgeName = opts['com.docker.network.bridge.name'];
  if (bridgeName !== undefined) checkLinkName(bridgeName);
  const mtu = opts['com.docker.network.driver.mtu'];
  if (mtu !== undefined && !/^[+-]?\d+$/.test(mtu)) {
    throw new BadRequestError(`failed to parse com.docker.network.driver.mtu value: ${mtu} (strconv.Atoi: parsing "${mtu}": invalid syntax)`);
  }
  const ipam = (body.IPAM ?? {}) as { Config?: Array<Record<string, unknown>> | null };
  const configs = ipam.Config ?? [];
  for (const c of configs) {
    const subnet = String(c.Subnet ?? '');
    if (!parseCidrText(subnet)) throw new BadRequestError(`Invalid subnet ${subnet} : invalid CIDR address: ${subnet}`);
  }
  for (const c of configs) {
    const gw = c.Gateway ? String(c.Gateway) : '';
    if (gw && !isIPv4(gw) && !isIPv6(gw)) throw new BadRequestError(`invalid gateway address ${gw} in Ipam configuration`);
    const range = c.IPRange ? String(c.IPRange) : '';
    if (range && !parseCidrText(range)) throw new BadRequestError(`Invalid Address SubPool`);
  }
  for (const c of configs) checkUsableSubnet(String(c.Subnet), c.Gateway ? String(c.Gateway) : '');
  // ipamAllocateVersion: auxiliary addresses must parse and lie in the subnet.
  for (const c of configs) {
    const subnet = parseCidrText(String(c.Subnet))!;
    for (const [k, v] of Object.entries((c.AuxiliaryAddresses ?? {}) as Record<string, string>)) {
      if (!isIPv4(v) && !isIPv6(v)) throw new BadRequestError(`non parsable secondary ip address (${k}:${v}) passed for network ${String(name)}`);
      if (!inside(subnet, v)) throw new ForbiddenError(`auxiliary address: (${k}:${v}) must belong to the master pool: ${formatNet(subnet)}`);
    }
  }
}

/** Docker's network names that can only be the pre-defined networks. */
const PREDEFINED_NAMES = ['bridge', 'host', 'none', 'default', 'ingress'];

function base(c: Cidr): bigint {
  const bits = c.v6 ? 128 : 32;
  return c.addr - (c.addr % (1n << BigInt(bits - c.prefix)));
}

function inside(c: Cidr, ip: string): boolean {
  if (c.v6 !== isIPv6(ip)) return false;
  const n = c.v6 ? parseIPv6(ip) : BigInt(parseIPv4(ip));
  const b = base(c);
  return n >= b && n < b + (1n << BigInt((c.v6 ? 128 : 32) - c.prefix));
}

/** The subnet as Go prints a masked *net.IPNet. */
function formatNet(c: Cidr): string {
  const b = base(c);
  if (!c.v6) return `${[24n, 16n, 8n, 0n].map((s) => String((b >> s) & 255n)).join('.')}/${c.prefix}`;
  const groups = Array.from({ length: 8 }, (_, i) => ((b >> BigInt(112 - 16 * i)) & 0xffffn).toString(16));
  return `${groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')}/${c.prefix}`;
}

/**
 * The kernel's own rule for an interface name (dev_valid_name): 1 to 15 bytes, not "." or "..",
 * no "/", ":" or white space. Docker 20.10 passes the name to netlink and answers the kernel's
 * EINVAL with a 500; berth says what is wrong first.
 */
export function checkLinkName(name: string): void {
  const why = name === '' ? 'it is empty'
    : Buffer.byteLength(name) > 15 ? 'it is longer than 15 bytes'
    : name === '.' || name === '..' ? 'it is "." or ".."'
    : /[/:\s]/.test(name) ? 'it contains "/", ":" or white space'
    : undefined;
  if (why) throw new BadRequestError(`invalid bridge name "${name}" (com.docker.network.bridge.name): ${why}`);
}

interface Cidr { v6: boolean; addr: bigint; prefix: number }

/** Go's net.ParseCIDR: an address of either family, "/" and a prefix length in range. */
function parseCidrText(s: string): Cidr | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const prefix = Number(m[2]);
  if (isIPv4(m[1]!)) return prefix <= 32 ? { v6: false, addr: BigInt(parseIPv4(m[1]!)), prefix } : undefined;
  if (isIPv6(m[1]!)) return prefix <= 128 ? { v6: true, addr: parseIPv6(m[1]!), prefix } : undefined;
  return undefined;
}

/**
 * A subnet that cannot work as a network, and a gateway that IPAM would refuse. Docker 20.10
 * allocates the gateway from the pool's bitmap, where the network and broadcast addresses are
 * taken and addresses outside the pool are out of range, and answers "failed to allocate gateway
 * (GW): Address already in use" / "…: Requested address is out of range" (with a 500).
 * Loopback, multicast and unspecified subnets Docker accepts, and a bridge with 127.0.0.1/8 then
 * shadows the host's loopback; berth refuses them.
 */
function checkUsableSubnet(subnet: string, gateway: string): void {
  const c = parseCidrText(subnet)!;
  const bits = c.v6 ? 128 : 32;
  const base = c.addr - (c.addr % (1n << BigInt(bits - c.prefix)));
  if (!c.v6) {
    const first = Number(base >> 24n);
    const what = first === 127 ? 'loopback' : first === 0 ? 'unspecified (0.0.0.0/8)' : first >= 224 ? 'multicast or reserved' : undefined;
    if (what) throw new BadRequestError(`invalid subnet ${subnet}: ${what} addresses cannot be used for a network`);
  } else {
    const top = Number(base >> 120n);
    if (top === 0xff) throw new BadRequestError(`invalid subnet ${subnet}: multicast addresses cannot be used for a network`);
    if (base === 0n && c.prefix >= 96) throw new BadRequestError(`invalid subnet ${subnet}: loopback and unspecified addresses cannot be used for a network`);
  }
  if (!gateway || (c.v6 !== isIPv6(gateway))) return;
  const gw = c.v6 ? parseIPv6(gateway) : BigInt(parseIPv4(gateway));
  const count = 1n << BigInt(bits - c.prefix);
  if (gw < base || gw >= base + count) throw new BadRequestError(`failed to allocate gateway (${gateway}): Requested address is out of range`);
  // IPv4 pools reserve the network and broadcast addresses; IPv6 pools only the subnet-router anycast (the first).
  const reserved = gw === base || (!c.v6 && gw === base + count - 1n);
  if (reserved) throw new BadRequestError(`failed to allocate gateway (${gateway}): Address already in use`);
}
