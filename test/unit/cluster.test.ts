import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { leaveManagerError } from '../../src/cluster/errors.js';
import { caDigest, goTime, newJoinToken, newNodeId, parseJoinToken } from '../../src/cluster/ids.js';
import { certDer, certValidity, checkCa, issuedBy, makeCa, makeCsr, signCsr, tlsInfo } from '../../src/cluster/pki.js';
import { caSettings, Control, goDuration } from '../../src/cluster/control.js';
import { K } from '../../src/cluster/keys.js';
import type { Session } from '../../src/cluster/session.js';
import { issuerOf, pemList, renewAt, renewalTimer, trustOf, wantedIssuer } from '../../src/cluster/rotation.js';
import type { ClusterRecord } from '../../src/cluster/keys.js';
import { defaultSpec, nodeView } from '../../src/cluster/views.js';
import type { NodeRecord } from '../../src/cluster/keys.js';
import { X509Certificate } from 'node:crypto';
import { retryAuthOld } from '../../src/cluster/store.js';

describe('cluster: identifiers, tokens and certificates', () => {
  it("makes IDs and tokens in Docker's forms, with the CA digest the joiner pins", () => {
    assert.match(newNodeId(), /^[0-9a-z]{25}$/);
    const der = Buffer.from('a certificate');
    const t = newJoinToken(der);
    assert.match(t, /^SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}$/);
    const p = parseJoinToken(t)!;
    assert.equal(p.digest, caDigest(der));
    // The digest is sha256 of the DER in base 36, left-padded to 50.
    assert.equal(BigInt(`0x${createHash('sha256').update(der).digest('hex')}`).toString(36).padStart(50, '0'), p.digest);
    assert.notEqual(newJoinToken(der), t, 'two tokens share a secret');
    for (const bad of ['', 'SWMTKN-1-abc-def', t.replace('SWMTKN-1', 'SWMTKN-2'), `${t}x`, t.toUpperCase()]) assert.equal(parseJoinToken(bad), undefined, bad);
    assert.match(goTime(new Date(0)), /^1970-01-01T00:00:00\.000000000Z$/);
  });

  it('issues node certificates the CA signed, named for the node, its role and cluster', async () => {
    const ca = await makeCa();
    const { csr, key } = await makeCsr();
    assert.match(key, /BEGIN PRIVATE KEY/);
    const t0 = Date.now();
    const pem = await signCsr(ca, csr, { nodeId: 'n1', role: 'worker', clusterId: 'c1', ips: ['10.99.0.2'], expirySec: 90 });
    const cert = new X509Certificate(pem);
    const root = new X509Certificate(ca.cert);
    assert.ok(cert.verify(root.publicKey));
    assert.ok(cert.checkIssued(root));
    assert.match(cert.subject, /CN=n1/);
    assert.match(cert.subject, /OU=swarm-worker/);
    assert.match(cert.subject, /O=c1/);
    assert.match(cert.subjectAltName ?? '', /IP Address:10\.99\.0\.2/);
    assert.match(cert.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
    assert.equal(cert.ca, false);
    assert.equal(root.ca, true);
    // The lifetime asked for, to the second (openssl x509 -req could give only whole days).
    const to = Date.parse(cert.validTo);
    assert.ok(to >= Math.floor(t0 / 1000) * 1000 + 89_000 && to <= Date.now() + 91_000, cert.validTo);
    assert.ok(Date.parse(cert.validFrom) <= t0 - 59_000, `backdated: ${cert.validFrom}`);
    const info = tlsInfo(ca.cert);
    // The subject is the DER of CN=swarm-ca; the key is the CA's SubjectPublicKeyInfo.
    assert.ok(Buffer.from(info.CertIssuerSubject, 'base64').includes(Buffer.from('swarm-ca')));
    assert.deepEqual(Buffer.from(info.CertIssuerPublicKey, 'base64'), root.publicKey.export({ type: 'spki', format: 'der' }));
    assert.equal(caDigest(certDer(ca.cert)).length, 50);
  });
});

describe("cluster: Docker's words and shapes", () => {
  it('says what a manager leaving would cost, as swarm.go does', () => {
    assert.equal(leaveManagerError(1, 0).message, 'You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message. ');
    assert.equal(leaveManagerError(2, 0).message, 'You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves 1 managers out of 2. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.');
    // Quorum survives: only the general warning.
    assert.equal(leaveManagerError(3, 0).message, 'You are attempting to leave the swarm on a node that is participating as a manager. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.');
    assert.equal(leaveManagerError(3, 0).status, 503);
  });

  it("fills a spec's zero values with swarmkit's defaults and keeps the given ones", () => {
    const s = defaultSpec({ Raft: { ElectionTick: 0, HeartbeatTick: 0, SnapshotInterval: 500 }, Orchestration: { TaskHistoryRetentionLimit: 9 }, Labels: { a: 'b' } });
    assert.deepEqual(s.Raft, { SnapshotInterval: 500, KeepOldSnapshots: 0, LogEntriesForSlowFollowers: 500, ElectionTick: 10, HeartbeatTick: 1 });
    assert.deepEqual(s.Orchestration, { TaskHistoryRetentionLimit: 9 });
    assert.deepEqual(s.Labels, { a: 'b' });
    assert.equal(s.Name, 'default');
  });

  it('shows a node ready, down or unknown, and its manager status', async () => {
    const ca = await makeCa();
    const rec: NodeRecord = {
      ID: 'n1', CreatedAt: 'x', UpdatedAt: 'y', Spec: { Labels: {}, Role: 'manager', Availability: 'active' }, Addr: '10.99.0.1', Port: 2377, MemberId: '42',
      Description: { Hostname: 'h', Platform: { Architecture: 'x86_64', OS: 'linux' }, Resources: { NanoCPUs: 1, MemoryBytes: 1 }, Engine: { EngineVersion: '0', Plugins: [] } },
    };
    const v = { value: rec, modRevision: 7 };
    const up = nodeView(v, { alive: new Set(['n1']), leaderMember: '42', caCert: ca.cert, external: false });
    assert.deepEqual([up.Status, up.ManagerStatus, up.Version], [{ State: 'ready', Addr: '10.99.0.1' }, { Leader: true, Reachability: 'reachable', Addr: '10.99.0.1:2377' }, { Index: 7 }]);
    const down = nodeView(v, { alive: new Set(), caCert: ca.cert, external: false });
    assert.deepEqual([(down.Status as { State: string }).State, down.ManagerStatus], ['down', { Reachability: 'unreachable', Addr: '10.99.0.1:2377' }]);
    const unknown = nodeView(v, { alive: new Set(), caCert: ca.cert, external: false, unknown: 'other' });
    assert.equal((unknown.Status as { State: string }).State, 'unknown');
    const worker = nodeView({ value: { ...rec, Spec: { ...rec.Spec, Role: 'worker' } }, modRevision: 1 }, { alive: new Set(['n1']), caCert: ca.cert, external: false });
    assert.equal(worker.ManagerStatus, undefined);
    // An external store: no member to mark, the orchestrator lock's holder leads.
    const { MemberId: _m, ...noMember } = rec;
    const ext = { value: noMember, modRevision: 1 };
    assert.deepEqual(nodeView(ext, { alive: new Set(['n1']), leaderMember: '42', leaderNode: 'n1', caCert: ca.cert, external: true }).ManagerStatus, { Leader: true, Reachability: 'reachable', Addr: '10.99.0.1:2377' });
    assert.deepEqual(nodeView(ext, { alive: new Set(['n1']), leaderNode: 'n2', caCert: ca.cert, external: true }).ManagerStatus, { Reachability: 'reachable', Addr: '10.99.0.1:2377' });
    // No member and no leader known (the lock is between holders) is not "the same": no Leader mark.
    assert.deepEqual(nodeView(ext, { alive: new Set(['n1']), caCert: ca.cert, external: true }).ManagerStatus, { Reachability: 'reachable', Addr: '10.99.0.1:2377' });
  });
});

describe('cluster: the CA over time (swarm ca, --cert-expiry, renewal)', () => {
  it("checks a spec's CA settings as swarmkit does and keeps the signing key out of the stored spec", async () => {
    assert.equal(goDuration(3600), '1h0m0s');
    assert.equal(goDuration(90), '1m30s');
    assert.equal(goDuration(45), '45s');
    assert.throws(() => caSettings({ NodeCertExpiry: 59 * 60e9 }, 3600), /rpc error: code = InvalidArgument desc = minimum certificate expiry time is: 1h0m0s/);
    assert.deepEqual(caSettings({ NodeCertExpiry: 3600e9, ForceRotate: 2 }, 3600), { kept: { NodeCertExpiry: 3600e9, ForceRotate: 2 } });
    assert.throws(() => caSettings({ ExternalCAs: [{ URL: 'https://x' }] }, 3600), /external CA/);
    assert.throws(() => caSettings({ SigningCAKey: 'k' }, 3600), /signing CA cert must also be provided/);
    const ca = await makeCa();
    const other = await makeCa();
    const s = caSettings({ SigningCACert: ca.cert, SigningCAKey: ca.key, ForceRotate: 1 }, 3600);
    assert.deepEqual(s.kept, { ForceRotate: 1 });
    assert.equal(s.signing?.key, ca.key);
    assert.throws(() => caSettings({ SigningCACert: ca.cert, SigningCAKey: other.key }, 3600), /does not match/);
    assert.equal(checkCa(ca), undefined);
    const { csr } = await makeCsr();
    const leaf = await signCsr(ca, csr, { nodeId: 'n', role: 'worker', clusterId: 'c', ips: [], expirySec: 3600 });
    assert.match(checkCa({ cert: leaf, key: ca.key }) ?? '', /not a CA/);
  });

  it('says which CAs to trust and which must sign at each step of a rotation', async () => {
    const [a, b] = [await makeCa(), await makeCa()];
    const { csr } = await makeCsr();
    const byA = await signCsr(a, csr, { nodeId: 'n', role: 'worker', clusterId: 'c', ips: [], expirySec: 3600 });
    const base = { CaCert: a.cert } as ClusterRecord;
    assert.deepEqual(trustOf(base), [a.cert]);
    assert.equal(wantedIssuer(base), a.cert);
    const trust = { ...base, Rotation: { CaCert: b.cert, Phase: 'trust' as const } };
    assert.deepEqual(trustOf(trust), [a.cert, b.cert]);
    assert.equal(wantedIssuer(trust), undefined);
    assert.equal(wantedIssuer({ ...trust, Rotation: { CaCert: b.cert, Phase: 'issue' } }), b.cert);
    assert.equal(issuerOf(trust, byA), a.cert);
    assert.ok(issuedBy(byA, a.cert) && !issuedBy(byA, b.cert));
    assert.deepEqual(pemList(`junk\n${a.cert.trim()}\n\n${b.cert}`), [a.cert, b.cert]);
  });

  it('renews between half and four fifths of a certificate\'s life, not counting the backdating', async () => {
    const v = { from: 0, to: 160_000 };
    assert.equal(renewAt(v, 60_000, 0), 110_000);
    assert.equal(renewAt(v, 60_000, 1), 140_000);
    const ca = await makeCa();
    const { csr } = await makeCsr();
    const validity = certValidity(await signCsr(ca, csr, { nodeId: 'n', role: 'worker', clusterId: 'c', ips: [], expirySec: 20 }));
    const at = renewAt(validity);
    assert.ok(at > Date.now() + 5_000 && at < validity.to - 3_000, `${at - Date.now()} ms from now`);
    // 90-day certificates renew after 45 days or more, beyond what one Node timer can wait.
    const day = 86_400_000;
    assert.deepEqual(renewalTimer(60 * day, 0), { delayMs: 2 ** 31 - 1, renew: false });
    assert.deepEqual(renewalTimer(60 * day, 60 * day - 1000), { delayMs: 1000, renew: true });
    assert.deepEqual(renewalTimer(5, 10), { delayMs: 0, renew: true });
  });

  it("shows a node's own TLS state, so the CLI can follow a rotation", async () => {
    const [a, b] = [await makeCa(), await makeCa()];
    const rec = {
      ID: 'n1', CreatedAt: 'x', UpdatedAt: 'y', Spec: { Labels: {}, Role: 'worker' as const, Availability: 'active' as const }, Addr: '10.99.0.1', Port: 2377,
      Description: { Hostname: 'h', Platform: { Architecture: 'x86_64', OS: 'linux' }, Resources: { NanoCPUs: 1, MemoryBytes: 1 }, Engine: { EngineVersion: '0', Plugins: [] } },
      Tls: { Issuer: b.cert, Trust: [a.cert, b.cert] },
    };
    const v = nodeView({ value: rec, modRevision: 1 }, { alive: new Set(), caCert: a.cert, external: false });
    const t = (v.Description as { TLSInfo: ReturnType<typeof tlsInfo> }).TLSInfo;
    assert.equal(t.TrustRoot, a.cert + b.cert);
    assert.equal(t.CertIssuerPublicKey, tlsInfo(b.cert).CertIssuerPublicKey);
  });
});

describe('cluster: calls to the store', () => {
  it("sends again a request etcd refused because its access rules changed meanwhile, and only that", async () => {
    let calls = 0;
    const flaky = async () => {
      if (++calls < 3) throw new Error('3 INVALID_ARGUMENT: etcdserver: revision of auth store is old');
      return 'written';
    };
    assert.equal(await retryAuthOld(flaky), 'written');
    assert.equal(calls, 3);
    calls = 0;
    await assert.rejects(retryAuthOld(async () => { calls++; throw new Error('etcdserver: permission denied'); }), /permission denied/);
    assert.equal(calls, 1);
    calls = 0;
    await assert.rejects(retryAuthOld(async () => { calls++; throw new Error('etcdserver: revision of auth store is old'); }, 4), /auth store is old/);
    assert.equal(calls, 4);
  });
});

describe('cluster: node liveness while the store elects a leader', () => {
  /** A manager's store as Control reads it: one manager and one worker, both with presence keys. */
  function fakeSession(ca: string) {
    const node = (id: string, role: 'manager' | 'worker'): NodeRecord => ({
      ID: id, CreatedAt: 'x', UpdatedAt: 'y', Spec: { Labels: {}, Role: role, Availability: 'active' }, Addr: '10.99.0.1', Port: 2377, ...(role === 'manager' ? { MemberId: '42' } : {}),
      Description: { Hostname: id, Platform: { Architecture: 'x86_64', OS: 'linux' }, Resources: { NanoCPUs: 1, MemoryBytes: 1 }, Engine: { EngineVersion: '0', Plugins: [] } },
    });
    const data = new Map<string, unknown>([
      [K.cluster, { ID: 'c', CaCert: ca }], [K.node('m1'), node('m1', 'manager')], [K.node('w1'), node('w1', 'worker')],
      [K.aliveOf('m1'), {}], [K.aliveOf('w1'), {}],
    ]);
    const pick = (r: { key: string; prefix?: boolean }) => new Map([...data].filter(([k]) => (r.prefix ? k.startsWith(r.key) : k === r.key)).map(([k, v]) => [k, { value: v, modRevision: 1 }]));
    const store = {
      degraded: false,
      readMany: async (reads: Array<{ key: string; prefix?: boolean }>) => reads.map(pick),
      list: async (prefix: string) => pick({ key: prefix, prefix: true }),
      get: async (key: string) => pick({ key }).get(key),
      leaderRecent: async () => '42',
    };
    return { store, data, session: { state: { role: 'manager', nodeId: 'm1' }, store } as unknown as Session };
  }
  const states = async (c: Control) => (await c.listNodes()).map((n) => `${(n.Description as { Hostname: string }).Hostname} ${(n.Status as { State: string }).State}`).sort();

  it('answers from the presence it last read for a lease TTL, then says it cannot know', async () => {
    const ca = (await makeCa()).cert;
    const { store, session } = fakeSession(ca);
    const control = new Control(() => session, { leaseTtlSec: 0.3 });
    assert.deepEqual(await states(control), ['m1 ready', 'w1 ready']);
    // No leader: a serializable read still finds both keys (leases do not expire without one),
    // which proves nothing; the read before the election does, for a TTL.
    store.degraded = true;
    assert.deepEqual(await states(control), ['m1 ready', 'w1 ready']);
    await new Promise((r) => setTimeout(r, 350));
    assert.deepEqual(await states(control), ['m1 ready', 'w1 unknown']);
    // The last read made without a leader is not one to answer from later.
    store.degraded = false;
    assert.deepEqual(await states(control), ['m1 ready', 'w1 ready']);
  });

  it('never answers from a read of another session (a node that left and joined again)', async () => {
    const ca = (await makeCa()).cert;
    const a = fakeSession(ca);
    const b = fakeSession(ca);
    let current = a.session;
    const control = new Control(() => current, { leaseTtlSec: 30 });
    assert.deepEqual(await states(control), ['m1 ready', 'w1 ready']);
    current = b.session;
    b.store.degraded = true;
    assert.deepEqual(await states(control), ['m1 ready', 'w1 unknown']);
  });
});
