import { BadRequestError } from './errors.js';

/** IPv6 addresses as text and as 128-bit BigInts; shared by IPAM, the DNS and the API. */

export function isIPv6(s: string): boolean {
  return s.includes(':');
}

export function parseIPv6(s: string): bigint {
  const bad = () => new BadRequestError(`invalid IPv6 address: ${s}`);
  let text = s;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const o = v4[2]!.split('.').map(Number);
    if (o.some((x) => x > 255)) throw bad();
    text = `${v4[1]}${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) throw bad();
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) throw bad();
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  let n = 0n;
  for (const g of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
    n = (n << 16n) | BigInt(parseInt(g, 16));
  }
  return n;
}

/** An IPv6 address as its 16 bytes, network order (nftables keys, certificates' IP SANs). */
export function ipv6Bytes(s: string): Buffer {
  const b = Buffer.alloc(16);
  let n = parseIPv6(s);
  for (let i = 15; i >= 0; i--) { b[i] = Number(n & 0xffn); n >>= 8n; }
  return b;
}

/** RFC 5952 text: lower case, no leading zeros, the longest run of zero groups (2+) as "::". */
export function formatIPv6(n: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}


/** The address a reverse (PTR) name stands for: 1.0.0.0.…ip6.arpa → address. */
export function ip6FromArpa(qname: string): string | undefined {
  const m = /^((?:[0-9a-f]\.){32})ip6\.arpa\.?$/i.exec(qname);
  if (!m) return undefined;
  const nibbles = m[1]!.split('.').filter(Boolean).reverse();
  let n = 0n;
  for (const x of nibbles) n = (n << 4n) | BigInt(parseInt(x, 16));
  return formatIPv6(n);
}
