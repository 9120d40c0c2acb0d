import { nftSetElements } from '../kernel/nft.js';
import { TABLE, type EndpointSource } from './firewall.js';

/** The source guard's sets read back from the kernel, which keeps them across berthd restarts. */

/** The elements of one of the guard's sets as the kernel has them: a name, or the parts of a concatenation. */
export function guardSetElements(set: string): Promise<Array<string | string[]>> {
  return nftSetElements('bridge', TABLE, set);
}

/** A port's guard allowances as the kernel has them (src4 holds its MAC and IPv4, src6 its IPv6). */
export async function guardedSource(port: string): Promise<EndpointSource | undefined> {
  const entries = async (set: string): Promise<string[][]> => (await guardSetElements(set)).filter((c): c is string[] => Array.isArray(c) && c[0] === port);
  const v4 = (await entries('src4')).find((c) => c[2] !== '0.0.0.0');
  if (!v4) return undefined;
  // The link-local element follows from the MAC; the global one is the other.
  const v6 = (await entries('src6')).find((c) => !c[2]!.startsWith('fe80:'));
  return { port, mac: v4[1]!, ip: v4[2]!, ...(v6 ? { ip6: v6[2]! } : {}) };
}

/** Every (MAC, IPv4) a port may send from, as the kernel has them (the VXLAN port of an overlay holds many). */
export async function guardedPairs(port: string): Promise<Array<{ mac: string; ip: string }>> {
  return (await guardSetElements('src4')).filter((c): c is string[] => Array.isArray(c) && c[0] === port && c[2] !== '0.0.0.0').map((c) => ({ mac: c[1]!, ip: c[2]! }));
}
