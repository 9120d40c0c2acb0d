import { newId } from '../util/ids.js';
import { formatCidr, newPool, parseCidr } from './ipam.js';
import { OPT_BRIDGE_NAME, OPT_DEFAULT_BRIDGE, OPT_HOST_BINDING, OPT_ICC, OPT_MASQ, OPT_MTU } from './options.js';
import type { NetworkRecord } from './types.js';

/** The record of a network every host has from the start (`host`, `none`, `bridge`), as Docker shows it. */
export function predefined(name: string, driver: string): NetworkRecord {
  return {
    Name: name, Id: newId(), Created: new Date().toISOString(), Scope: 'local', Driver: driver, EnableIPv6: false,
    IPAM: { Driver: 'default', Options: null, Config: [] }, Internal: false, Attachable: false, Ingress: false,
    ConfigFrom: { Network: '' }, ConfigOnly: false, Options: {}, Labels: {},
  };
}

/**
 * The default bridge: on `--bip` (its gateway address with the prefix, 16 when none is given, as
 * Docker's) or else on `subnet`, the first free pool the caller found.
 */
export function defaultBridgeRecord(o: { bip?: string; subnet?: string; bridgeName: string; mtu: number }): NetworkRecord {
  let subnet = o.subnet;
  let gateway: string | undefined;
  if (o.bip) {
    const [ip, prefix] = o.bip.split('/');
    subnet = formatCidr(parseCidr(`${ip}/${prefix ?? '16'}`));
    gateway = ip;
  }
  if (!subnet) throw new Error('the default bridge needs --bip or a free subnet');
  const n = predefined('bridge', 'bridge');
  n.Options = {
    [OPT_DEFAULT_BRIDGE]: 'true', [OPT_ICC]: 'true', [OPT_MASQ]: 'true',
    [OPT_HOST_BINDING]: '0.0.0.0', [OPT_BRIDGE_NAME]: o.bridgeName, [OPT_MTU]: String(o.mtu),
  };
  n.pools = [newPool(subnet, { gateway })];
  n.IPAM.Config = [{ Subnet: subnet, Gateway: n.pools[0]!.gateway }];
  n.bridge = o.bridgeName;
  n.mtu = o.mtu;
  return n;
}
