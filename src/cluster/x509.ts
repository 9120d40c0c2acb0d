import { createHash, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { ipv6Bytes } from '../util/ipv6.js';

/**
 * A node certificate built in-process: a TBSCertificate signed with the CA's key, from a PKCS#10
 * request checked here. Node parses X.509 but cannot issue it, and `openssl ca` costs a process
 * and seven scratch files per join, 8-10 ms of it on a quiet machine and 20-40 ms on a busy one.
 * It issues what `openssl ca` issued before (pki.ts's extensions, OpenSSL 3's key identifiers);
 * the CA and the node keys are still made by openssl. ECDSA and RSA CA keys, SHA-256 signatures.
 */

/** One DER element: tag, length, content. */
function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

const seq = (...c: Buffer[]) => tlv(0x30, ...c);
const set = (...c: Buffer[]) => tlv(0x31, ...c);
const octets = (b: Buffer) => tlv(0x04, b);
const bits = (b: Buffer, unused = 0) => tlv(0x03, Buffer.from([unused]), b);
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, 'utf8'));
const TRUE = Buffer.from([0x01, 0x01, 0xff]);

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number) as [number, number, ...number[]];
  const out = [40 * a + b];
  for (const v of rest) {
    const groups: number[] = [];
    for (let x = v; ; x = Math.floor(x / 128)) {
      groups.unshift(x % 128);
      if (x < 128) break;
    }
    out.push(...groups.map((g, i) => (i < groups.length - 1 ? g | 0x80 : g)));
  }
  return tlv(0x06, Buffer.from(out));
}

/** A positive INTEGER from bytes (a leading zero where the high bit is set). */
function uint(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0 && !(b[i + 1]! & 0x80)) i++;
  const v = b.subarray(i);
  return tlv(0x02, v[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

/** X.509's time: UTCTime until 2049, GeneralizedTime after (RFC 5280 4.1.2.5). */
function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const year = d.getUTCFullYear();
  return year >= 1950 && year < 2050 ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${iso}Z`));
}

const OID = {
  CN: '2.5.4.3', OU: '2.5.4.11', O: '2.5.4.10',
  ecdsaSha256: '1.2.840.10045.4.3.2', rsaSha256: '1.2.840.113549.1.1.11',
  basicConstraints: '2.5.29.19', keyUsage: '2.5.29.15', extKeyUsage: '2.5.29.37', subjectAltName: '2.5.29.17', subjectKeyId: '2.5.29.14', authorityKeyId: '2.5.29.35',
  serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

/** A Name of one attribute per RDN, in the order given (as openssl's -subj /CN=…/OU=…/O=… writes it). */
export function name(parts: Array<['CN' | 'OU' | 'O', string]>): Buffer {
  return seq(...parts.map(([k, v]) => set(seq(oid(OID[k]), utf8(v)))));
}

/** The signature algorithm for a key: ECDSA or RSA, with SHA-256. */
function algorithm(key: KeyObject): Buffer {
  if (key.asymmetricKeyType === 'ec') return seq(oid(OID.ecdsaSha256));
  if (key.asymmetricKeyType === 'rsa') return seq(oid(OID.rsaSha256), Buffer.from([0x05, 0x00]));
  throw new Error(`a CA key of type ${key.asymmetricKeyType} cannot sign here (ECDSA or RSA only)`);
}

/** One DER element at `off` of `buf`: where its content starts, where it ends. */
function derAt(buf: Buffer, off: number): { start: number; end: number } {
  if (off + 2 > buf.length) throw new Error('truncated DER');
  let len = buf[off + 1]!;
  let start = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n < 1 || n > 4 || start + n > buf.length) throw new Error('malformed DER length');
    len = buf.readUIntBE(off + 2, n);
    start += n;
  }
  if (start + len > buf.length) throw new Error('truncated DER');
  return { start, end: start + len };
}

/** The elements inside a constructed one. */
function children(buf: Buffer, el: { start: number; end: number }): Buffer[] {
  const out: Buffer[] = [];
  for (let off = el.start; off < el.end;) {
    const c = derAt(buf, off);
    out.push(buf.subarray(off, c.end));
    off = c.end;
  }
  return out;
}

function ipBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (!isIPv6(ip)) throw new Error(`not an IP address: ${ip}`);
  return ipv6Bytes(ip);
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [TRUE] : []), octets(value));
}

/** The public key's bytes inside a SubjectPublicKeyInfo (what a key identifier hashes, RFC 5280's method 1). */
function keyIdOfSpki(spki: Buffer): Buffer {
  const [, key] = children(spki, derAt(spki, 0));
  return createHash('sha1').update(key!.subarray(derAt(key!, 0).start + 1)).digest();
}

/**
 * The key identifier a CA goes by: its subjectKeyIdentifier when it has one, else the SHA-1 of
 * its public key. While a rotation trusts two CAs of one name (both "swarm-ca"), OpenSSL picks a
 * leaf's issuer by it (the leaf's authorityKeyIdentifier), not by trying both.
 */
export function keyIdOf(caDer: Buffer): Buffer {
  const tbs = children(caDer, derAt(caDer, 0))[0]!;
  const parts = children(tbs, derAt(tbs, 0));
  const exts = parts.find((p) => p[0] === 0xa3);
  if (exts) {
    const list = children(exts, derAt(exts, 0))[0]!;
    for (const ext of children(list, derAt(list, 0))) {
      const [id, ...rest] = children(ext, derAt(ext, 0));
      if (!id!.equals(oid(OID.subjectKeyId))) continue;
      const value = rest[rest.length - 1]!;
      const inner = value.subarray(derAt(value, 0).start);
      return inner.subarray(derAt(inner, 0).start, derAt(inner, 0).end);
    }
  }
  return keyIdOfSpki(parts[parts[0]![0] === 0xa0 ? 6 : 5]!);
}

export interface LeafSpec {
  subject: Buffer;
  /** The CA's subject Name, DER, as its certificate has it. */
  issuer: Buffer;
  issuerKeyId: Buffer;
  /** The subject's public key, SubjectPublicKeyInfo DER. */
  spki: Buffer;
  notBefore: Date;
  notAfter: Date;
  ips: string[];
  dns: string[];
}

/** A node certificate, DER, signed by the CA's key: a TLS server and client both. */
export function leafCertificate(c: LeafSpec, caKey: KeyObject): Buffer {
  // A random serial, positive and of fixed size: certificates of one CA must never share one.
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  const exts = [
    extension(OID.subjectAltName, false, seq(...c.ips.map((ip) => tlv(0x87, ipBytes(ip))), ...c.dns.map((d) => tlv(0x82, Buffer.from(d))))),
    extension(OID.basicConstraints, true, seq()),
    extension(OID.keyUsage, true, bits(Buffer.from([0xa0]), 5)), // digitalSignature, keyEncipherment
    extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth))),
    extension(OID.subjectKeyId, false, octets(keyIdOfSpki(c.spki))),
    extension(OID.authorityKeyId, false, seq(tlv(0x80, c.issuerKeyId))),
  ];
  const alg = algorithm(caKey);
  const tbs = seq(
    tlv(0xa0, uint(Buffer.from([2]))), uint(serial), alg, c.issuer,
    seq(time(c.notBefore), time(c.notAfter)), c.subject, c.spki, tlv(0xa3, seq(...exts)),
  );
  return seq(tbs, alg, bits(sign('sha256', tbs, caKey)));
}

/** The public key of a request whose signature checks out (the requester holds the key); throws otherwise. */
export function requestKey(der: Buffer): Buffer {
  const [info, alg, sig] = children(der, derAt(der, 0));
  if (!info || !alg || !sig) throw new Error('malformed certificate request');
  const [, , spki] = children(info, derAt(info, 0));
  if (!spki) throw new Error('malformed certificate request');
  const algOid = children(alg, derAt(alg, 0))[0]!;
  if (!algOid.equals(oid(OID.ecdsaSha256)) && !algOid.equals(oid(OID.rsaSha256))) throw new Error('unsupported signature algorithm in the certificate request');
  const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  const s = derAt(sig, 0);
  if (!verify('sha256', info, key, sig.subarray(s.start + 1, s.end))) throw new Error('the certificate request signature does not verify');
  return Buffer.from(spki);
}

export function pem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

export function unpem(text: string): Buffer {
  const m = /-----BEGIN [^-]+-----([\s\S]*?)-----END [^-]+-----/.exec(text);
  if (!m) throw new Error('not PEM');
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}
