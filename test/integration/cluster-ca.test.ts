import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { caDigest } from '../../src/cluster/ids.js';
import { certDer } from '../../src/cluster/pki.js';
import { run } from '../../src/util/exec.js';
import { BERTH_CLI, DOCKER_CLI, waitFor } from './harness.js';
import { Lab, waitForOutput, type LabHost } from './lab.js';

/**
 * The cluster CA through the docker CLI: `swarm ca` shows the root, `swarm ca --rotate` moves
 * every node (three managers, whose etcd members must keep quorum, and a worker) to a new CA
 * while the cluster keeps working, the join tokens follow the root, and certificates of a short
 * `--cert-expiry` are renewed by their nodes before they run out.
 */

const TTL = 3;
/** The lab's berthds accept certificates of 20 s and more (Docker's floor is an hour). */
const MIN_EXPIRY = 20;

describe('cluster: swarm ca, rotation and renewal', () => {
  let lab: Lab;
  let hosts: LabHost[];
  let h0: LabHost, h1: LabHost, h3: LabHost;
  let oldWorkerToken = '';

  before(async () => {
    lab = await Lab.create(4, { leaseTtlSec: TTL, minCertExpirySec: MIN_EXPIRY });
    hosts = lab.hosts;
    [h0, h1, , h3] = hosts as [LabHost, LabHost, LabHost, LabHost];
    await lab.formSwarm(2);
  });

  after(async () => {
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  const tlsOf = async (h: LabHost) => {
    const d = join(h.host.root, 'cluster', 'tls');
    const [ca, cert] = await Promise.all([fs.readFile(join(d, 'ca.crt'), 'utf8'), fs.readFile(join(d, 'node.crt'), 'utf8')]);
    return { ca, cert: new X509Certificate(cert) };
  };
  const etcdPid = async (h: LabHost) => Number(await fs.readFile(join(h.host.root, 'cluster', 'etcd.pid'), 'utf8').catch(() => '0'));
  const swarm = async () => (await h0.host.api('GET', '/swarm')).json;
  /** The docker CLI with a bound: a rotation that never ends must fail the test, not hang it. */
  const dockerBounded = (h: LabHost, args: string[], timeoutMs: number) => run(DOCKER_CLI, ['-H', `unix://${h.host.socket}`, ...args],
    { env: { ...process.env, DOCKER_CONFIG: join(h.host.dir, 'docker-config') }, timeout: timeoutMs });
  const allReady = async (via: LabHost) => waitForOutput(() => via.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}']),
    (o) => o.trim().split('\n').length === 4 && !/Down|Unknown/.test(o), 'every node Ready', 20_000);

  /**
   * Watches the cluster while something runs: node states through the API of a manager every
   * 250 ms. Returns what it saw, so a test can prove it looked and that no node went Down.
   */
  function watchCluster(via: LabHost): { stop: () => Promise<{ polls: number; down: string[]; errors: string[] }> } {
    let done = false;
    const seen = { polls: 0, down: [] as string[], errors: [] as string[] };
    const loop = (async () => {
      while (!done) {
        const r = await via.host.api('GET', '/nodes', undefined, {}, { timeoutMs: 10_000 }).catch((e: Error) => ({ status: 0, body: e.message, json: undefined }));
        seen.polls++;
        if (r.status !== 200) seen.errors.push(`${r.status} ${r.body}`);
        else for (const n of r.json as Array<{ Description: { Hostname: string }; Status: { State: string } }>) if (n.Status.State !== 'ready') seen.down.push(`${n.Description.Hostname} ${n.Status.State}`);
        await new Promise((res) => setTimeout(res, 250));
      }
    })();
    return { stop: async () => { done = true; await loop; return seen; } };
  }

  it('shows the root CA; refuses CA flags without --rotate and an expiry under the minimum', async () => {
    const r = await h0.host.docker(['swarm', 'ca']);
    assert.equal(r.code, 0, r.stderr);
    const s = await swarm();
    assert.equal(r.stdout.trim(), s.TLSInfo.TrustRoot.trim());
    assert.equal((await tlsOf(h3)).ca, s.TLSInfo.TrustRoot, "the worker's trusted CA is not the root shown");
    const flag = await h0.host.docker(['swarm', 'ca', '--cert-expiry', '48h']);
    assert.notEqual(flag.code, 0);
    assert.match(flag.stderr, /`--cert-expiry` flag requires the `--rotate` flag to update the CA/);
    const short = await h0.host.docker(['swarm', 'update', '--cert-expiry', '10s']);
    assert.notEqual(short.code, 0);
    assert.match(short.stderr, /rpc error: code = InvalidArgument desc = minimum certificate expiry time is: 20s/);
    const ok = await h0.host.docker(['swarm', 'update', '--cert-expiry', '2h']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await swarm()).Spec.CAConfig.NodeCertExpiry, 7200e9);
    // berth's own CLI: the same commands and words (and its info says what the node is in the swarm).
    const bi = await h1.host.berth(['info']);
    assert.match(bi.stdout, /\n Swarm: active\n  NodeID: [0-9a-z]{25}\n  Is Manager: true\n  ClusterID: [0-9a-z]{25}\n  Managers: 3\n  Nodes: 4\n  Node Address: 10\.99\.0\.2\n  Manager Addresses:\n   10\.99\.0\.1:2377\n/, bi.stdout);
    assert.match((await h3.host.berth(['info'])).stdout, /\n Swarm: active\n  NodeID: [0-9a-z]{25}\n  Is Manager: false\n  Node Address: 10\.99\.0\.4\n/);
    const b = await h1.host.berth(['swarm', 'ca']);
    assert.equal(b.stdout.trim(), s.TLSInfo.TrustRoot.trim(), b.stderr);
    const bflag = await h1.host.berth(['swarm', 'ca', '--cert-expiry', '48h']);
    assert.notEqual(bflag.code, 0);
    assert.match(bflag.stderr, /`--cert-expiry` flag requires the `--rotate` flag to update the CA/);
    const bshort = await h1.host.berth(['swarm', 'update', '--cert-expiry', '10s']);
    assert.match(bshort.stderr, /minimum certificate expiry time is: 20s/);
    const bok = await h1.host.berth(['swarm', 'update', '--cert-expiry', '3h']);
    assert.equal(bok.stdout, 'Swarm updated.\n', bok.stderr);
    assert.equal((await swarm()).Spec.CAConfig.NodeCertExpiry, 3 * 3600e9);
    // Every node says which CA it holds: the root, as yet.
    const nodes = (await h0.host.api('GET', '/nodes')).json as Array<{ Description: { TLSInfo: { TrustRoot: string; CertIssuerPublicKey: string } } }>;
    assert.equal(nodes.length, 4);
    for (const n of nodes) assert.deepEqual(n.Description.TLSInfo, s.TLSInfo);
  });

  it('nothing of a manager listens off loopback without TLS', async () => {
    const ss = await run('nsenter', [`--net=/run/netns/${h0.host.netns}`, 'ss', '-ltnH']);
    assert.equal(ss.code, 0, ss.stderr);
    const open = ss.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)[3]!).filter((a) => !/^(127\.|\[::1\]|\[::ffff:127\.)/.test(a));
    // The control port, etcd's client and peer ports: those, on the underlay address, and nothing else.
    assert.deepEqual(open.sort(), [`${h0.addr}:2377`, `${h0.addr}:2379`, `${h0.addr}:2380`]);
    const probe = `const [h, p] = process.argv.slice(1); const s = require('tls').connect({ host: h, port: Number(p), rejectUnauthorized: false, timeout: 5000 });
      s.once('secureConnect', () => { console.log('tls ' + s.getProtocol()); s.destroy(); });
      s.once('error', (e) => console.log('error ' + (e.code || '') + ' ' + e.message)); s.once('timeout', () => { console.log('timeout'); s.destroy(); });`;
    for (const a of open) {
      const [host, port] = [a.slice(0, a.lastIndexOf(':')), a.slice(a.lastIndexOf(':') + 1)];
      const r = await run('nsenter', [`--net=/run/netns/${h0.host.netns}`, process.execPath, '-e', probe, host, port]);
      // A TLS handshake, or a TLS alert (etcd wants a client certificate): TLS either way; plain text would be "wrong version number".
      assert.match(r.stdout, /^tls TLSv1\.[23]|^error \S* .*(alert|certificate)/, `${a}: ${r.stdout}${r.stderr}`);
    }
  });

  it('rotates to a new CA on every node while the cluster keeps working; the tokens follow the root', { timeout: 300_000 }, async () => {
    const before = await swarm();
    const oldRoot: string = before.TLSInfo.TrustRoot;
    oldWorkerToken = before.JoinTokens.Worker;
    const members = await Promise.all(hosts.slice(0, 3).map(etcdPid));
    const watch = watchCluster(h1);
    const rotating = dockerBounded(h0, ['swarm', 'ca', '--rotate'], 240_000);
    // A second rotation while this one runs is refused, and this one goes on.
    await waitFor(async () => (await h1.host.api('GET', '/swarm')).json?.RootRotationInProgress === true, 'the rotation under way', 60_000);
    const second = await dockerBounded(h1, ['swarm', 'ca', '--rotate', '--detach'], 60_000);
    assert.notEqual(second.code, 0, `a second rotation was taken: ${second.stdout}`);
    assert.match(second.stderr, /a root CA rotation is already in progress/);
    const r = await rotating;
    const seen = await watch.stop();
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout.slice(-2000)}`);
    const after = await swarm();
    const newRoot: string = after.TLSInfo.TrustRoot;
    assert.notEqual(newRoot, oldRoot);
    assert.equal(after.RootRotationInProgress, false);
    // The CLI waited for the end and then printed the new root (its progress lines come first).
    assert.ok(r.stdout.trim().endsWith(newRoot.trim()), r.stdout.slice(-600));
    assert.equal(after.Spec.CAConfig.ForceRotate, (before.Spec.CAConfig.ForceRotate ?? 0) + 1);
    // Tokens carry the new root's digest, and are new.
    const digest = caDigest(certDer(newRoot));
    for (const role of ['Worker', 'Manager'] as const) {
      assert.notEqual(after.JoinTokens[role], before.JoinTokens[role]);
      assert.equal(after.JoinTokens[role].split('-')[2], digest);
    }
    // Every node trusts the new root alone and holds a certificate of it.
    const root = new X509Certificate(newRoot);
    for (const h of hosts) {
      const t = await tlsOf(h);
      assert.equal(t.ca, newRoot, `${h.name} still trusts another CA`);
      assert.ok(t.cert.verify(root.publicKey), `${h.name}'s certificate is not the new CA's`);
    }
    // Each member was restarted (etcd reads its CAs only at start), and none lost the cluster.
    const now = await Promise.all(hosts.slice(0, 3).map(etcdPid));
    for (let i = 0; i < 3; i++) assert.notEqual(now[i], members[i], `lab${i}'s member was not restarted`);
    assert.ok(seen.polls >= 5, `the watch looked only ${seen.polls} times`);
    assert.deepEqual(seen.down, [], 'a node went down during the rotation');
    assert.deepEqual(seen.errors, [], 'the managers could not answer during the rotation');
    await allReady(h0);
    // Writes go through every manager and are read through the others.
    for (const [i, h] of hosts.slice(0, 3).entries()) {
      const w = await h.host.docker(['node', 'update', '--label-add', `after-rotation-${i}=1`, 'lab3']);
      assert.equal(w.code, 0, w.stderr);
    }
    const labels = (await h1.host.api('GET', '/nodes/lab3')).json.Spec.Labels;
    assert.deepEqual(Object.keys(labels).sort(), ['after-rotation-0', 'after-rotation-1', 'after-rotation-2']);
  });

  it('a joiner with a token of the old root is refused; the new token works', { timeout: 120_000 }, async () => {
    const leave = await h3.host.docker(['swarm', 'leave']);
    assert.equal(leave.code, 0, leave.stderr);
    await waitForOutput(() => h0.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}']), (o) => o.includes('lab3 Down'), 'lab3 Down after leaving', 20_000);
    const rm = await h0.host.docker(['node', 'rm', 'lab3']);
    assert.equal(rm.code, 0, rm.stderr);
    const s = await swarm();
    assert.ok(oldWorkerToken);
    const refused = await h3.host.docker(['swarm', 'join', '--token', oldWorkerToken, `${h0.addr}:2377`]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /remote CA does not match fingerprint/);
    const ok = await h3.host.docker(['swarm', 'join', '--token', s.JoinTokens.Worker, `${h0.addr}:2377`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await tlsOf(h3)).ca, s.TLSInfo.TrustRoot);
    await allReady(h0);
  });

  it('renews certificates of a short --cert-expiry before they run out (rotated with berth\'s CLI)', { timeout: 300_000 }, async () => {
    const r = await run(process.execPath, [BERTH_CLI, '-H', `unix://${h1.host.socket}`, 'swarm', 'ca', '--rotate', '--cert-expiry', `${MIN_EXPIRY}s`], { timeout: 240_000 });
    assert.equal(r.code, 0, r.stderr);
    // Progress as the docker CLI counts it, ending with every node on the new root, then the root.
    assert.match(r.stdout, /rotated TLS certificates: 4\/4 nodes, rotated CA certificates: 4\/4 nodes\n-----BEGIN CERTIFICATE-----/);
    assert.equal(r.stdout.slice(r.stdout.indexOf('-----BEGIN')).trim(), (await swarm()).TLSInfo.TrustRoot.trim());
    assert.equal((await swarm()).Spec.CAConfig.NodeCertExpiry, MIN_EXPIRY * 1e9);
    const first = await Promise.all(hosts.map(tlsOf));
    for (const t of first) assert.ok(Date.parse(t.cert.validTo) - Date.parse(t.cert.validFrom) <= (MIN_EXPIRY + 61) * 1000, `a certificate of ${t.cert.validFrom}..${t.cert.validTo}`);
    // Past the end of every certificate issued by the rotation: each node must have renewed its own.
    const end = Math.max(...first.map((t) => Date.parse(t.cert.validTo)));
    await waitFor(async () => Date.now() > end + 2000, 'the first certificates to expire', (MIN_EXPIRY + 30) * 1000);
    for (const [i, h] of hosts.entries()) {
      const t = await tlsOf(h);
      assert.notEqual(t.cert.serialNumber, first[i]!.cert.serialNumber, `${h.name} did not renew its certificate`);
      assert.ok(Date.parse(t.cert.validTo) > Date.now(), `${h.name}'s certificate has expired`);
    }
    await allReady(h0);
    const w = await h1.host.docker(['node', 'update', '--label-add', 'renewed=1', 'lab3']);
    assert.equal(w.code, 0, w.stderr);
    assert.equal((await h0.host.api('GET', '/nodes/lab3')).json.Spec.Labels.renewed, '1');
  });
});
