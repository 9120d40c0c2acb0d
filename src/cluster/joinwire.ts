import { X509Certificate } from 'node:crypto';
import { request, createServer, type Server } from 'node:https';
import { connect, type DetailedPeerCertificate, type TLSSocket } from 'node:tls';
import { ApiError, errorMessage } from '../util/errors.js';
import { caDigest, parseJoinToken } from './ids.js';
import { rpcError, UnavailableError } from './errors.js';
import type { NodeRecord } from './keys.js';

/**
 * The join endpoint on a manager's control port (2377, as Docker's): HTTPS with the manager's node
 * certificate. A joiner has no certificate yet; it pins the CA by the digest in its token, then
 * sends the token's secret and a certificate request, and gets its identity back. Docker does the
 * same over gRPC (swarmkit ca.GetRemoteCA, then IssueNodeCertificate).
 */

export interface JoinRequest { token: string; csr: string; addr: string; port: number; hostname: string; description: NodeRecord['Description'] }
export interface JoinAnswer {
  nodeId: string; clusterId: string; role: 'manager' | 'worker';
  /** The joiner's address as the manager recorded it (the one it was seen at, when not given). */
  addr: string;
  ca: string; cert: string;
  /** etcd client URLs of the managers' members (or of the external store). */
  endpoints: string[];
  /** Its presence is written already (a worker's, with its record): the join need not wait for its own. */
  present?: boolean;
  /** For a manager: its etcd member, added as a learner, and the initial-cluster line to start it with. */
  memberId?: string; initialCluster?: string;
}

const MAX_BODY = 1 << 20;

/** A node's request for a new certificate (renewal, CA rotation); who it is comes from its TLS certificate. */
export interface RenewRequest { csr: string }
export interface JoinHandlers {
  join: (r: JoinRequest, remote: string) => Promise<JoinAnswer>;
  renew: (nodeId: string, r: RenewRequest) => Promise<{ cert: string }>;
}

/**
 * `ca` is what client certificates are checked against: a joiner has none yet (its token is its
 * proof), a node renewing its certificate shows the one it has.
 */
export function serveJoins(o: { host: string; port: number; cert: string; key: string; ca: string; chain: string }, handle: JoinHandlers): Promise<Server> {
  const server = createServer({ cert: o.cert + o.chain, key: o.key, ca: o.ca, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' }, (req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'POST' || (req.url !== '/join' && req.url !== '/renew')) return send(404, { message: 'not found' });
    const socket = req.socket as TLSSocket;
    const peer = req.url === '/renew' && socket.authorized ? socket.getPeerCertificate().subject?.CN : undefined;
    if (req.url === '/renew' && !peer) return send(403, { message: 'a node certificate of this swarm is needed to renew one' });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => { size += c.length; if (size <= MAX_BODY) chunks.push(c); });
    req.on('end', () => {
      let body: unknown;
      try { body = JSON.parse(Buffer.concat(chunks).toString()); } catch { return send(400, { message: 'invalid join request' }); }
      const answer = peer ? handle.renew(String(peer), body as RenewRequest) : handle.join(body as JoinRequest, req.socket.remoteAddress ?? '');
      answer.then((a) => send(200, a), (e) => send(e instanceof ApiError ? e.status : 500, { message: errorMessage(e) }));
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => { server.off('error', reject); resolve(server); });
  });
}

function unreachable(addr: string, e: unknown): ApiError {
  const code = (e as NodeJS.ErrnoException).code;
  const why = code === 'ECONNREFUSED' ? 'connect: connection refused' : code === 'EHOSTUNREACH' ? 'connect: no route to host' : code === 'ETIMEDOUT' ? 'i/o timeout' : errorMessage(e);
  return rpcError('Unavailable', `connection error: desc = "transport: Error while dialing dial tcp ${addr}: ${why}"`);
}

const split = (addr: string) => {
  const i = addr.lastIndexOf(':');
  return { host: addr.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(addr.slice(i + 1)) };
};

/**
 * Connects to the manager without trusting it yet, and checks the CA it presents against the
 * token's digest and its own certificate against that CA. The connection is then the one the
 * join request goes on: its peer is proven (the pinned CA signed its certificate, and the TLS
 * handshake proved it holds that certificate's key), and a second handshake would only repeat it.
 */
function remoteCa(addr: string, digest: string, timeoutMs: number): Promise<{ ca: string; socket: TLSSocket }> {
  const { host, port } = split(addr);
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, rejectUnauthorized: false, timeout: timeoutMs });
    const fail = (e: Error) => { s.destroy(); reject(e); };
    const onTimeout = () => fail(unreachable(addr, Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    const onError = (e: Error) => fail(unreachable(addr, e));
    s.once('timeout', onTimeout);
    s.once('error', onError);
    s.once('secureConnect', () => {
      const leaf = s.getPeerCertificate(true);
      let issuer: DetailedPeerCertificate | undefined = leaf.issuerCertificate;
      while (issuer && issuer.issuerCertificate && issuer.issuerCertificate !== issuer) issuer = issuer.issuerCertificate;
      if (!issuer?.raw) return fail(rpcError('Unavailable', 'the manager presented no CA certificate'));
      if (caDigest(issuer.raw) !== digest) return fail(new ApiError(500, `remote CA does not match fingerprint. Expected: ${digest}`));
      const root = new X509Certificate(issuer.raw);
      const own = new X509Certificate(leaf.raw);
      // The leaf must really be the CA's: a pinned CA proves nothing about a leaf it did not sign.
      if (!own.verify(root.publicKey)) return fail(new ApiError(500, 'the manager certificate is not signed by the swarm CA'));
      // And in force, as TLS verification would require (with its words).
      const now = Date.now();
      if (now < Date.parse(own.validFrom)) return fail(unreachable(addr, new Error('certificate is not yet valid')));
      if (now > Date.parse(own.validTo)) return fail(unreachable(addr, new Error('certificate has expired')));
      // The request sets its own timeout and error handling on the connection.
      s.off('timeout', onTimeout);
      s.off('error', onError);
      s.setTimeout(0);
      resolve({ ca: root.toString(), socket: s });
    });
  });
}

export async function requestJoin(addr: string, req: JoinRequest, timeoutMs = 5000): Promise<JoinAnswer> {
  const t = parseJoinToken(req.token);
  if (!t) throw new ApiError(500, 'invalid join token');
  const { ca, socket } = await remoteCa(addr, t.digest, timeoutMs);
  const { status, json } = await postPinned(addr, '/join', { ca }, req, 30_000, socket).catch((e: Error) => {
    throw e.message === 'bad answer' ? new UnavailableError('bad answer from the manager') : unreachable(addr, e);
  });
  const j = json as { message?: string } & JoinAnswer;
  if (status !== 200) throw new ApiError(status || 500, j.message ?? 'join refused');
  return j;
}

/** A new certificate from a manager, asked with the certificate this node has (it must still be valid). */
export async function requestRenew(addr: string, tls: { ca: Buffer; cert: Buffer; key: Buffer }, csr: string, timeoutMs = 30_000): Promise<string> {
  const { status, json } = await postPinned(addr, '/renew', tls, { csr } satisfies RenewRequest, timeoutMs).catch((e: Error) => {
    throw new Error(e.message === 'bad answer' ? 'bad answer from the manager' : e.message === 'timeout' ? `${addr}: timeout` : e.message);
  });
  const j = json as { message?: string; cert?: string };
  if (status === 200 && j.cert) return j.cert;
  throw new Error(j.message ?? `renewal refused (${status})`);
}

/**
 * A JSON POST to a manager's control port, trusting only the swarm's CA. The manager's certificate
 * names its address, which may differ from the one dialled (a name, a second address), so identity
 * is the CA's signature alone. Rejects with 'bad answer' for a body that is not JSON, 'timeout'.
 */
function postPinned(addr: string, path: string, tls: { ca: string | Buffer; cert?: Buffer; key?: Buffer }, payload: unknown, timeoutMs: number, socket?: TLSSocket): Promise<{ status: number; json: unknown }> {
  const { host, port } = split(addr);
  const body = JSON.stringify(payload);
  return new Promise((resolve, reject) => {
    const r = request({
      host, port, method: 'POST', path, ...tls, timeout: timeoutMs,
      // A connection whose peer was checked already (remoteCa); the request closes it when done.
      ...(socket ? { createConnection: () => socket } : {}),
      checkServerIdentity: () => undefined,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try { resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) }); } catch { reject(new Error('bad answer')); }
      });
    });
    r.once('timeout', () => r.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    r.once('error', reject);
    r.end(body);
  });
}
