import { errorMessage } from '../util/errors.js';
import { ROOT } from './keys.js';
import type { ClusterStore } from './store.js';

/**
 * Who may touch what in berth's own store (etcd role-based access). Every node talks to etcd with
 * the certificate the cluster CA gave it, and etcd takes the certificate's CN, the node ID, as the
 * user: managers hold etcd's `root` role (member changes, the CA key and tokens under
 * /berth/secret/), every node holds `berth-node`, read-write on /berth/v1/ only. So a worker can
 * keep its records and presence but cannot read the CA key or the join tokens, as in Docker.
 */

export const NODE_ROLE = 'berth-node';

/** etcd's range end for "every key with this prefix". */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  b[b.length - 1]! += 1;
  return b;
}

const exists = (e: unknown) => /already exists/.test(errorMessage(e));
const missing = (e: unknown) => /not found|not granted/.test(errorMessage(e));

/**
 * At init, before anything else uses the store: the roles, the founding manager, auth on. Two
 * rounds of independent proposals (etcd batches what arrives together) and the switch:
 * `swarm init` waits on this.
 */
export async function enableAccess(store: ClusterStore, founder: string): Promise<void> {
  const a = store.client.auth;
  const tolerant = <T>(p: Promise<T>) => p.catch((e) => { if (!exists(e)) throw e; return undefined; });
  await Promise.all([
    store.call(() => tolerant(a.roleAdd({ name: NODE_ROLE }))),
    // etcd enables auth only with a root user; no one logs in as it: no password (nor the
    // bcrypt of one), only a certificate with CN root could, and the CA never issues one.
    store.call(() => tolerant(a.userAdd({ name: 'root', options: { no_password: true } }))),
    store.call(() => tolerant(a.userAdd({ name: founder, options: { no_password: true } }))),
  ]);
  await Promise.all([
    store.call(() => a.roleGrantPermission({ name: NODE_ROLE, perm: { permType: 'Readwrite', key: Buffer.from(ROOT), range_end: prefixEnd(ROOT) } })),
    store.call(() => a.userGrantRole({ user: 'root', role: 'root' })),
    store.call(() => a.userGrantRole({ user: founder, role: NODE_ROLE })),
    store.call(() => a.userGrantRole({ user: founder, role: 'root' })),
  ]);
  await store.call(() => a.authEnable({}));
}

export async function addNodeUser(store: ClusterStore, id: string, role: 'manager' | 'worker'): Promise<void> {
  const a = store.client.auth;
  await store.call(() => a.userAdd({ name: id, options: { no_password: true } }).catch((e) => { if (!exists(e)) throw e; return undefined; }));
  await Promise.all([
    store.call(() => a.userGrantRole({ user: id, role: NODE_ROLE })),
    ...(role === 'manager' ? [store.call(() => a.userGrantRole({ user: id, role: 'root' }))] : []),
  ]);
}

/** Promotion grants etcd's root role before the node acts on it; demotion takes it back. */
export async function setManager(store: ClusterStore, id: string, manager: boolean): Promise<void> {
  const a = store.client.auth;
  if (manager) await store.call(() => a.userGrantRole({ user: id, role: 'root' }));
  else await store.call(() => a.userRevokeRole({ name: id, role: 'root' }).catch((e) => { if (!missing(e)) throw e; return undefined; }));
}

/** A removed node's certificate opens nothing any more: its user goes. */
export async function removeNodeUser(store: ClusterStore, id: string): Promise<void> {
  await store.call(() => store.client.auth.userDelete({ name: id }).catch((e) => { if (!missing(e)) throw e; return undefined; }));
}
