/**
 * What changes a balancer table of berth's shape from one content to another: a verdict map with
 * one element per key (a VIP, a published port) leading to that key's chain, whose rules pick a
 * backend's chain in turn, which holds one DNAT. Only what differs, in one transaction's commands:
 * a key gone (or now another service's) loses its element before its chains; a key new gets its
 * chains before its element; a key whose backends changed gets the chains of its new backends, its
 * dispatch rules replaced, then the chains of its old ones deleted (kube-proxy's nftables mode
 * updates the same way). Its cost follows what changed, not the number of keys. Used by the
 * routing mesh (ingressmesh.ts), whose tables hold a few published ports; the sandboxes' VIP
 * balancers, which may hold 10,000 services, keep backends in map elements instead (lbtable.ts).
 */

/** How one kind of balancer names and writes its parts. */
export interface BalancerShape<E> {
  /** `ip TABLE`, as nft commands name the table. */
  table: string;
  /** The verdict map's name. */
  map: string;
  /** Whether `now` can keep `old`'s chains (same service, same target); otherwise it is replaced whole. */
  same(old: E, now: E): boolean;
  chain(e: E): string;
  backendChain(e: E, ip: string): string;
  /** The sorted, distinct backend addresses. */
  backends(e: E): string[];
  /** The key's chain's rules. */
  dispatch(e: E): string[];
  /** A backend chain's one rule. */
  dnat(e: E, ip: string): string;
}

/** The commands from `before` to `after` (keys with at least one backend, by map key). */
export function balancerChanges<E>(s: BalancerShape<E>, before: Map<string, E>, after: Map<string, E>): string[] {
  const t = s.table;
  const out: string[] = [];
  const removeChains = (e: E, ips: string[], whole: boolean) => {
    if (whole) out.push(`flush chain ${t} ${s.chain(e)}`, `delete chain ${t} ${s.chain(e)}`);
    for (const ip of ips) out.push(`flush chain ${t} ${s.backendChain(e, ip)}`, `delete chain ${t} ${s.backendChain(e, ip)}`);
  };
  const addChains = (e: E, ips: string[]) => {
    for (const ip of ips) out.push(`add chain ${t} ${s.backendChain(e, ip)}`, `add rule ${t} ${s.backendChain(e, ip)} ${s.dnat(e, ip)}`);
  };
  for (const [key, old] of before) {
    const e = after.get(key);
    if (e && s.same(old, e)) continue;
    out.push(`delete element ${t} ${s.map} { ${key} }`);
    removeChains(old, s.backends(old), true);
  }
  for (const [key, e] of after) {
    const old = before.get(key);
    if (!old || !s.same(old, e)) {
      out.push(`add chain ${t} ${s.chain(e)}`);
      addChains(e, s.backends(e));
      out.push(...s.dispatch(e).map((r) => `add rule ${t} ${s.chain(e)} ${r}`), `add element ${t} ${s.map} { ${key} : goto ${s.chain(e)} }`);
      continue;
    }
    const had = s.backends(old);
    const has = s.backends(e);
    if (had.join() === has.join()) continue;
    addChains(e, has.filter((ip) => !had.includes(ip)));
    out.push(`flush chain ${t} ${s.chain(e)}`, ...s.dispatch(e).map((r) => `add rule ${t} ${s.chain(e)} ${r}`));
    removeChains(e, had.filter((ip) => !has.includes(ip)), false);
  }
  return out;
}
