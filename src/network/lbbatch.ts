/**
 * A balancer script's changes as berth-nftset's batch arguments (native/berth-nftsetin.c reads
 * them): what lbtable.ts writes as nft text, taken line by line, for the changes the batch can
 * make without `nft`.
 */

import { elementHex, VIP_KIND, type TableKind } from './lbkinds.js';

/** The lines `elementArgs` takes, per kind: made once, as elementArgs runs at every change of every sandbox. */
const scriptLines = new WeakMap<TableKind, { element: RegExp; chain: RegExp; flush: RegExp; rule: RegExp }>();
function linesOf(kind: TableKind): { element: RegExp; chain: RegExp; flush: RegExp; rule: RegExp } {
  let l = scriptLines.get(kind);
  if (!l) {
    const t = `ip ${kind.table}`;
    // A key or backend is one address, or a concatenation of words and numbers (`tcp . 8080`); never ` : `.
    const value = '[\\w.]+(?: \\. [\\w.]+)*';
    const bucket = `${kind.chainPrefix}_b\\d+`;
    l = {
      // A slot's element, a dispatch map's (to a bucket chain), or the reject set's.
      element: new RegExp(`^(add|delete) element ${t} (slot\\d+|${kind.dispatchMap}|empty) \\{ (${value})(?: : (?:goto (${bucket})|(${value})))? \\}$`),
      chain: new RegExp(`^(add|delete) chain ${t} (${bucket})$`),
      flush: new RegExp(`^flush chain ${t} (${bucket})$`),
      rule: new RegExp(`^add rule ${t} (${bucket}) (.+) (?:goto to0|numgen inc mod (\\d+) vmap @rr(\\d+))$`),
    };
    scriptLines.set(kind, l);
  }
  return l;
}

/**
 * A script of elements (slots', the dispatch map's, the reject set's), bucket chains made or
 * deleted and bucket rules written again (all but a new slot or a table made whole), as the
 * arguments of berth-nftset's batch (`+set/key[:data]`, `+map/key:@chain`, `-set/key`, `*chain`,
 * `!chain`, `=chain` flushed, `>chain/key/backends` added); undefined for anything else. `nft`
 * would read every chain, set and object of the sandbox first (50 ms at 10,000 services on this
 * machine, more than the rest of the change), and its process costs 20-30 ms at any size; the
 * batch only sends what changes.
 */
export function elementArgs(script: string, kind: TableKind = VIP_KIND): string[] | undefined {
  if (!script) return undefined;
  const { element: ELEMENT, chain: CHAIN, flush: FLUSH, rule: RULE } = linesOf(kind);
  const args = [kind.table];
  for (const line of script.trim().split('\n')) {
    const m = ELEMENT.exec(line);
    if (m) {
      const data = m[4] !== undefined ? `:@${m[4]}` : m[5] !== undefined ? `:${elementHex(m[5])}` : '';
      if (m[1] === 'delete' && data) return undefined;
      args.push(m[1] === 'add' ? `+${m[2]}/${elementHex(m[3]!)}${data}` : `-${m[2]}/${elementHex(m[3]!)}`);
      continue;
    }
    const c = CHAIN.exec(line);
    if (c) { args.push(`${c[1] === 'add' ? '*' : '!'}${c[2]}`); continue; }
    const f = FLUSH.exec(line);
    if (f) { args.push(`=${f[1]}`); continue; }
    const r = RULE.exec(line);
    const key = r ? kind.keyOfMatch(r[2]!) : undefined;
    if (!r || key === undefined || r[3] !== r[4]) return undefined;
    args.push(`>${r[1]}/${elementHex(key)}/${r[3] ?? 1}`);
  }
  return args;
}
