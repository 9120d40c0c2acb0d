import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { makeCa, makeCsr, signCsr } from '../../src/cluster/pki.js';
import { certificate, certificationRequest, name, pem, requestKey, unpem } from '../../src/cluster/x509.js';

/** The in-process CA: what it issues must parse and verify as openssl's did. */
describe('x509', () => {
  const node = { nodeId: 'n1', role: 'worker' as const, clusterId: 'c1', ips: ['10.99.0.3', 'fd00::a:1'], expirySec: 3600 };

  it('a node certificate: signed by the CA, its names, its key, its validity', async () => {
    const ca = await makeCa();
    const { key, csr } = await makeCsr();
    const x = new X509Certificate(await signCsr(ca, csr, node));
    assert.ok(x.verify(new X509Certificate(ca.cert).publicKey));
    assert.ok(x.checkPrivateKey(createPrivateKey(key)));
    assert.equal(x.subject, 'CN=n1\nOU=swarm-worker\nO=c1');
    assert.equal(x.issuer, 'CN=swarm-ca');
    assert.equal(x.subjectAltName, 'IP Address:10.99.0.3, IP Address:FD00:0:0:0:0:0:A:1, IP Address:127.0.0.1, DNS:localhost');
    assert.equal(x.ca, false);
    assert.ok(x.checkIP('10.99.0.3') && x.checkIP('127.0.0.1') && !x.checkIP('10.99.0.4'));
    const span = Date.parse(x.validTo) - Date.parse(x.validFrom);
    assert.equal(span, (3600 + 60) * 1000);
    assert.equal(new X509Certificate(ca.cert).ca, true);
  });

  it('an RSA CA (swarm ca --rotate --ca-cert --ca-key) signs too', async () => {
    const k = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const subject = name([['CN', 'my-rsa-ca']]);
    const caCert = pem('CERTIFICATE', certificate({ subject, issuer: subject, spki: k.publicKey.export({ type: 'spki', format: 'der' }), notBefore: new Date(), notAfter: new Date(Date.now() + 86_400_000), ca: true }, k.privateKey));
    const { csr } = await makeCsr();
    const x = new X509Certificate(await signCsr({ cert: caCert, key: k.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }, csr, node));
    assert.ok(x.verify(new X509Certificate(caCert).publicKey));
    assert.equal(x.issuer, 'CN=my-rsa-ca');
  });

  it('a request whose signature does not match its key is refused', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const der = certificationRequest(name([['CN', 'pending']]), privateKey);
    assert.ok(requestKey(der).length > 0);
    const bad = Buffer.from(der);
    bad[bad.length - 5]! ^= 0xff; // inside the signature
    assert.throws(() => requestKey(bad), /does not verify|malformed|DER|truncated/);
    const ca = await makeCa();
    await assert.rejects(signCsr(ca, pem('CERTIFICATE REQUEST', bad), node), /invalid certificate request/);
    assert.deepEqual(unpem(pem('X', der)), der);
  });

  it('during a rotation two CAs share the name swarm-ca: OpenSSL still finds the one that signed (key identifiers)', async () => {
    const [a, b] = [await makeCa(), await makeCa()];
    const { csr } = await makeCsr();
    const d = mkdtempSync(join(tmpdir(), 'berth-x509-test-'));
    try {
      writeFileSync(join(d, 'bundle.pem'), a.cert + b.cert);
      writeFileSync(join(d, 'leaf.pem'), await signCsr(b, csr, node));
      // Without an authorityKeyIdentifier OpenSSL takes the first CA of the name and fails.
      assert.match(execFileSync('openssl', ['verify', '-CAfile', join(d, 'bundle.pem'), join(d, 'leaf.pem')]).toString(), /leaf\.pem: OK/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
