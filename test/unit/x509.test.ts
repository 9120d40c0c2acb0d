import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { makeCa, makeCsr, signCsr } from '../../src/cluster/pki.js';
import { pem, requestKey, unpem } from '../../src/cluster/x509.js';

/** Node certificates signed in-process: what they are must parse and verify as openssl's did. */
describe('x509: node certificates signed in-process', () => {
  const node = { nodeId: 'n1', role: 'worker' as const, clusterId: 'c1', ips: ['10.99.0.3', 'fd00::a:1'], expirySec: 3600 };
  const scratch = <T>(fn: (d: string) => T): T => {
    const d = mkdtempSync(join(tmpdir(), 'berth-x509-test-'));
    try { return fn(d); } finally { rmSync(d, { recursive: true, force: true }); }
  };
  /** openssl's own verdict on a leaf against a CA bundle, for TLS servers and clients both. */
  const opensslVerifies = (bundle: string, leaf: string) => scratch((d) => {
    writeFileSync(join(d, 'bundle.pem'), bundle);
    writeFileSync(join(d, 'leaf.pem'), leaf);
    for (const purpose of ['sslserver', 'sslclient']) {
      assert.match(execFileSync('openssl', ['verify', '-purpose', purpose, '-CAfile', join(d, 'bundle.pem'), join(d, 'leaf.pem')]).toString(), /leaf\.pem: OK/);
    }
  });

  it('is signed by the CA, with the node\'s names, key, validity and the extensions openssl ca gave', async () => {
    const ca = await makeCa();
    const { key, csr } = await makeCsr();
    const leaf = await signCsr(ca, csr, node);
    const x = new X509Certificate(leaf);
    assert.ok(x.verify(new X509Certificate(ca.cert).publicKey));
    assert.ok(x.checkPrivateKey(createPrivateKey(key)));
    assert.equal(x.subject, 'CN=n1\nOU=swarm-worker\nO=c1');
    assert.equal(x.issuer, 'CN=swarm-ca');
    assert.equal(x.subjectAltName, 'IP Address:10.99.0.3, IP Address:FD00:0:0:0:0:0:A:1, IP Address:127.0.0.1, DNS:localhost');
    assert.equal(x.ca, false);
    assert.deepEqual(x.keyUsage, ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    assert.equal(Date.parse(x.validTo) - Date.parse(x.validFrom), (3600 + 60) * 1000);
    const text = scratch((d) => { writeFileSync(join(d, 'l.pem'), leaf); return execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(d, 'l.pem')]).toString(); });
    assert.match(text, /Basic Constraints: critical\s+CA:FALSE/);
    assert.match(text, /Key Usage: critical\s+Digital Signature, Key Encipherment/);
    // Its authority key identifier is the CA's subject key identifier.
    const caText = scratch((d) => { writeFileSync(join(d, 'c.pem'), ca.cert); return execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(d, 'c.pem')]).toString(); });
    const ski = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(caText)![1]!;
    assert.match(text, new RegExp(`Authority Key Identifier:\\s+(keyid:)?${ski}`));
    opensslVerifies(ca.cert, leaf);
  });

  it('an RSA CA of the user\'s own (swarm ca --rotate --ca-cert --ca-key) signs too', async () => {
    const ca = scratch((d) => {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(d, 'k'), '-out', join(d, 'c'), '-days', '2', '-subj', '/CN=my-rsa-ca'], { stdio: 'ignore' });
      return { cert: readFileSync(join(d, 'c'), 'utf8'), key: readFileSync(join(d, 'k'), 'utf8') };
    });
    const { csr } = await makeCsr();
    const leaf = await signCsr(ca, csr, node);
    assert.ok(new X509Certificate(leaf).verify(new X509Certificate(ca.cert).publicKey));
    assert.equal(new X509Certificate(leaf).issuer, 'CN=my-rsa-ca');
    opensslVerifies(ca.cert, leaf);
  });

  it('refuses a request whose signature does not match its key', async () => {
    const { csr } = await makeCsr();
    const der = unpem(csr);
    assert.ok(requestKey(der).length > 0);
    const bad = Buffer.from(der);
    bad[bad.length - 5]! ^= 0xff; // inside the signature
    assert.throws(() => requestKey(bad), /does not verify|malformed|DER/);
    await assert.rejects(signCsr(await makeCa(), pem('CERTIFICATE REQUEST', bad), node), /invalid certificate request/);
    await assert.rejects(signCsr(await makeCa(), 'not a request', node), /invalid certificate request/);
  });

  it('during a rotation two CAs share the name swarm-ca: OpenSSL still finds the one that signed', async () => {
    const [a, b] = [await makeCa(), await makeCa()];
    const { csr } = await makeCsr();
    opensslVerifies(a.cert + b.cert, await signCsr(b, csr, node));
    opensslVerifies(a.cert + b.cert, await signCsr(a, csr, node));
  });
});
