import { X509Certificate, createPrivateKey } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { runOk } from '../util/exec.js';
import { withScratchDir } from '../util/scratch.js';
import { keyIdOf, leafCertificate, name, pem, requestKey, unpem } from './x509.js';

/**
 * The cluster CA and node keys, made by openssl; node certificates, signed in-process (x509.ts).
 * Keys are P-256 as swarmkit's; a node certificate serves for both TLS sides (etcd peers, etcd
 * clients, the join endpoint), with the node's underlay address and loopback as its names.
 */

export interface Pem { cert: string; key: string }

const scratch = <T>(fn: (dir: string) => Promise<T>): Promise<T> => withScratchDir('berth-pki', fn);

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export function makeCa(): Promise<Pem> {
  return scratch(async (d) => {
    await runOk('openssl', ['req', '-x509', ...EC, '-keyout', join(d, 'ca.key'), '-out', join(d, 'ca.crt'), '-days', '7300', '-subj', '/CN=swarm-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    return { cert: await fs.readFile(join(d, 'ca.crt'), 'utf8'), key: await fs.readFile(join(d, 'ca.key'), 'utf8') };
  });
}

/** A key and a request made where the key stays: the joiner sends only the request. */
export function makeCsr(): Promise<{ key: string; csr: string }> {
  return scratch(async (d) => {
    await runOk('openssl', ['req', '-new', ...EC, '-keyout', join(d, 'n.key'), '-out', join(d, 'n.csr'), '-subj', '/CN=pending']);
    return { key: await fs.readFile(join(d, 'n.key'), 'utf8'), csr: await fs.readFile(join(d, 'n.csr'), 'utf8') };
  });
}

/**
 * Signs a node's request (in-process: x509.ts). The subject is the manager's choice, not the
 * request's (as swarmkit does): CN the node ID, OU its role, O the cluster ID. Valid from a minute
 * ago (clocks of nodes differ a little, as swarmkit backdates too) for `expirySec` (the cluster's
 * NodeCertExpiry).
 */
export async function signCsr(ca: Pem, csr: string, o: { nodeId: string; role: 'manager' | 'worker'; clusterId: string; ips: string[]; expirySec: number }): Promise<string> {
  let spki: Buffer;
  try { spki = requestKey(unpem(csr)); } catch (e) { throw new Error(`invalid certificate request: ${(e as Error).message}`); }
  const caDer = new X509Certificate(ca.cert).raw;
  const now = Date.now();
  return pem('CERTIFICATE', leafCertificate({
    subject: name([['CN', o.nodeId], ['OU', `swarm-${o.role}`], ['O', o.clusterId]]), issuer: subjectDer(caDer), issuerKeyId: keyIdOf(caDer), spki,
    notBefore: new Date(now - 60_000), notAfter: new Date(now + o.expirySec * 1000),
    ips: [...new Set([...o.ips, '127.0.0.1'])], dns: ['localhost'],
  }, createPrivateKey(ca.key)));
}

/** A CA given by the user (`swarm ca --rotate --ca-cert --ca-key`): a CA certificate and its own key. */
export function checkCa(p: Pem): string | undefined {
  let x: X509Certificate;
  try { x = new X509Certificate(p.cert); } catch { return 'could not parse the signing CA certificate'; }
  if (!x.ca) return 'the signing CA certificate is not a CA certificate';
  let key;
  try { key = createPrivateKey(p.key); } catch { return 'could not parse the signing CA key'; }
  if (!x.checkPrivateKey(key)) return 'the signing CA key does not match the signing CA certificate';
  if (Date.parse(x.validTo) < Date.now()) return 'the signing CA certificate has expired';
  return undefined;
}

/** The validity of a certificate, in ms since the epoch. */
export function certValidity(pem: string): { from: number; to: number } {
  const x = new X509Certificate(pem);
  return { from: Date.parse(x.validFrom), to: Date.parse(x.validTo) };
}

/** Whether `cert` was signed by the CA `caPem`. */
export function issuedBy(cert: string, caPem: string): boolean {
  try { return new X509Certificate(cert).verify(new X509Certificate(caPem).publicKey); } catch { return false; }
}

export function certDer(pem: string): Buffer {
  return new X509Certificate(pem).raw;
}

/** One DER element at `off`: where its content starts and where it ends. */
function derAt(buf: Buffer, off: number): { start: number; end: number } {
  let len = buf[off + 1]!;
  let start = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = buf.readUIntBE(off + 2, n);
    start += n;
  }
  return { start, end: start + len };
}

/** The subject Name's DER, read from the certificate (Node exposes it only as text). */
function subjectDer(der: Buffer): Buffer {
  const tbs = derAt(der, derAt(der, 0).start);
  let off = tbs.start;
  if (der[off] === 0xa0) off = derAt(der, off).end; // explicit version
  for (let i = 0; i < 4; i++) off = derAt(der, off).end; // serial, signature, issuer, validity
  return der.subarray(off, derAt(der, off).end);
}

type TlsInfo = { TrustRoot: string; CertIssuerSubject: string; CertIssuerPublicKey: string };
/** A cluster has one or two CAs at a time: `node ls` need not parse them again for every node. */
const tlsInfoSeen = new Map<string, TlsInfo>();

/** TLSInfo as Docker shows it: the trust root, and the issuer's subject and key in base64 DER. */
export function tlsInfo(caPem: string): TlsInfo {
  const seen = tlsInfoSeen.get(caPem);
  if (seen) return { ...seen };
  const x = new X509Certificate(caPem);
  const spki = x.publicKey.export({ type: 'spki', format: 'der' });
  const info = { TrustRoot: caPem, CertIssuerSubject: subjectDer(x.raw).toString('base64'), CertIssuerPublicKey: spki.toString('base64') };
  if (tlsInfoSeen.size >= 8) tlsInfoSeen.clear();
  tlsInfoSeen.set(caPem, info);
  return { ...info };
}
