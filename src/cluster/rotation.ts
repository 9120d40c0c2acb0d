import { certDer, issuedBy, makeCa, signCsr, type Pem } from './pki.js';
import { newJoinToken, goTime } from './ids.js';
import { K, type ClusterRecord, type NodeRecord, type TokensRecord } from './keys.js';
import type { ClusterStore, Versioned } from './store.js';

/**
 * The cluster CA over time: which CA signs, which CAs a node must trust, and the steps of a
 * rotation (`swarm ca --rotate`). etcd reads its trusted CAs only when it starts, so a rotation
 * cannot swap the root in one go without cutting members off each other. It goes in steps, each
 * begun only once every node has finished the one before (a Down node holds it up, as in Docker):
 *   trust — every node trusts the old and the new CA (managers restart their members one at a time);
 *   issue — every node gets a certificate of the new CA (etcd reloads certificates per connection);
 *   done  — the new CA is the root, the join tokens carry its digest, nodes drop the old one.
 */

/** PEMs compare as text: every PEM berth stores is trimmed to one trailing newline. */
export const normPem = (p: string): string => `${p.trim()}\n`;

export function pemList(bundle: string): string[] {
  return (bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map(normPem);
}

/** The CAs a node must trust now. */
export function trustOf(c: ClusterRecord): string[] {
  return c.Rotation ? [normPem(c.CaCert), normPem(c.Rotation.CaCert)] : [normPem(c.CaCert)];
}

/** The CA a node's certificate must come from now; undefined while either will do (trust step). */
export function wantedIssuer(c: ClusterRecord): string | undefined {
  if (!c.Rotation) return normPem(c.CaCert);
  return c.Rotation.Phase === 'issue' ? normPem(c.Rotation.CaCert) : undefined;
}

/** Which of the cluster's CAs issued `cert`. */
export function issuerOf(c: ClusterRecord, cert: string): string | undefined {
  return [c.CaCert, ...(c.Rotation ? [c.Rotation.CaCert] : [])].map(normPem).find((ca) => issuedBy(cert, ca));
}

/** The CA (with its key) that signs certificates now: the new one once nodes trust it. */
export async function signer(store: ClusterStore, c: ClusterRecord): Promise<Pem> {
  const p = await store.get<Pem>(c.Rotation?.Phase === 'issue' ? K.caNext : K.ca);
  if (!p) throw new Error('the cluster CA key is missing from the store');
  return p.value;
}

/** NodeCertExpiry (Go nanoseconds) in seconds. */
export function expirySec(spec: ClusterRecord['Spec']): number {
  const ns = Number((spec.CAConfig as { NodeCertExpiry?: number } | undefined)?.NodeCertExpiry ?? 7_776_000_000_000_000);
  return Math.floor(ns / 1e9);
}

/** A certificate for a node already in the cluster (renewal, rotation), by the current signer. */
export async function issueFor(store: ClusterStore, c: ClusterRecord, rec: NodeRecord, csr: string): Promise<string> {
  return signCsr(await signer(store, c), csr, { nodeId: rec.ID, role: rec.Spec.Role, clusterId: c.ID, ips: [rec.Addr], expirySec: expirySec(c.Spec) });
}

/** Starts a rotation to `next` (a new CA when not given). The caller's version check is part of it. */
export async function beginRotation(store: ClusterStore, c: Versioned<ClusterRecord>, spec: ClusterRecord['Spec'], next?: Pem): Promise<boolean> {
  const ca = next ?? (await makeCa());
  const pem = { cert: normPem(ca.cert), key: ca.key };
  const rec: ClusterRecord = { ...c.value, Spec: spec, UpdatedAt: goTime(), Rotation: { CaCert: pem.cert, Phase: 'trust' } };
  const r = await store.call(() => store.client.if(K.cluster, 'Mod', '==', c.modRevision)
    .then(store.client.put(K.cluster).value(JSON.stringify(rec)), store.client.put(K.caNext).value(JSON.stringify(pem))).commit());
  return r.succeeded;
}

/**
 * One step of a rotation, if the nodes are ready for it. Any manager may take it (each checks
 * every second while a rotation is under way); the version check makes it happen once.
 */
export async function advanceRotation(store: ClusterStore): Promise<void> {
  const c = await store.get<ClusterRecord>(K.cluster);
  const r = c?.value.Rotation;
  if (!c || !r) return;
  const nodes = [...(await store.list<NodeRecord>(K.nodes)).values()].map((n) => n.value);
  const next = normPem(r.CaCert);
  if (r.Phase === 'trust') {
    if (nodes.every((n) => n.Tls?.Trust.includes(next))) {
      await store.update(K.cluster, { ...c.value, Rotation: { ...r, Phase: 'issue' } }, c.modRevision);
    }
    return;
  }
  if (!nodes.every((n) => n.Tls?.Issuer === next)) return;
  const key = await store.get<Pem>(K.caNext);
  if (!key) throw new Error('the new CA key is missing from the store');
  const { Rotation: _done, ...rest } = c.value;
  const done: ClusterRecord = { ...rest, CaCert: next, UpdatedAt: goTime() };
  // Tokens carry the root's digest: they change with it, as Docker's do.
  const der = certDer(next);
  const tokens: TokensRecord = { Worker: newJoinToken(der), Manager: newJoinToken(der) };
  const cl = store.client;
  await store.call(() => cl.if(K.cluster, 'Mod', '==', c.modRevision)
    .then(cl.put(K.cluster).value(JSON.stringify(done)), cl.put(K.ca).value(JSON.stringify(key.value)), cl.put(K.tokens).value(JSON.stringify(tokens)), cl.delete().key(K.caNext))
    .commit());
}

/**
 * When a node renews its certificate (swarmkit's rule): at a random point between half and
 * four fifths of its life, so the nodes of a cluster made at once do not all renew at once.
 */
export function renewAt(validity: { from: number; to: number }, backdateMs = 60_000, rand = Math.random()): number {
  const issued = Math.min(validity.from + backdateMs, validity.to);
  return issued + (validity.to - issued) * (0.5 + 0.3 * rand);
}

/**
 * The timer towards a renewal: a Node timer waits at most ~24.8 days, and 90-day certificates
 * renew after 45 or more, so a far renewal is reached in steps and only the last one renews.
 */
export function renewalTimer(at: number, now = Date.now(), maxMs = 2 ** 31 - 1): { delayMs: number; renew: boolean } {
  const wait = at - now;
  return wait > maxMs ? { delayMs: maxMs, renew: false } : { delayMs: Math.max(0, wait), renew: true };
}
