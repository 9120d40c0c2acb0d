import { setManager } from './access.js';
import { goTime } from './ids.js';
import { K, type NodeRecord } from './keys.js';
import type { Session } from './session.js';
import type { ClusterStore } from './store.js';

/**
 * A manager's member leaving the store's cluster, and what a node that leaves the swarm tells the
 * store. When the member is this node's own, everything after its removal goes through the other
 * managers' members only: the removed one stops serving, and a write the client sent it was lost
 * (a leaving manager's record stayed a manager's, `Down Unreachable`, and its user kept etcd's
 * root role).
 */

/**
 * The managers other than `id` that count: with berth's own store, those that are the store's
 * members (managers lost to a --force-new-cluster keep their records but hold none of the data);
 * with an external store, every other manager.
 */
export async function peerManagers(store: ClusterStore, nodes: Iterable<NodeRecord>, id: string, external: boolean): Promise<NodeRecord[]> {
  const others = [...nodes].filter((n) => n.ID !== id && n.Spec.Role === 'manager');
  if (external) return others;
  const members = new Set((await store.members()).map((m) => m.ID));
  return others.filter((n) => n.MemberId && members.has(n.MemberId));
}

/**
 * Takes member `memberId` out of the store's cluster (unless it is already gone), then runs
 * `then`. `peers`, when the member is this node's own: both go through their members only.
 */
export async function withMemberRemoved(s: Session, memberId: string | undefined, peers: NodeRecord[] | undefined, then: (store: ClusterStore) => Promise<void>): Promise<void> {
  const store = peers ? await s.storeAt(peers.map((n) => n.Addr)) : s.store;
  try {
    if (memberId && (await store.members()).some((m) => m.ID === memberId)) await store.removeMember(memberId);
    await then(store);
  } finally {
    if (store !== s.store) store.close();
  }
}

/** A manager with peers leaves the store's cluster and its record becomes a worker's; the last manager ends the swarm (an external store is emptied of it). */
export async function tellStoreLeaving(s: Session, o: { external: boolean }): Promise<void> {
  const id = s.state.nodeId;
  const nodes = await s.store.list<NodeRecord>(K.nodes);
  const peers = await peerManagers(s.store, [...nodes.values()].map((n) => n.value), id, o.external);
  const manager = s.state.role === 'manager';
  if (manager && peers.length === 0) {
    if (o.external) await s.store.deletePrefix('/berth/');
    return;
  }
  const rec = nodes.get(K.node(id));
  if (!rec) return;
  const own = o.external ? undefined : rec.value.MemberId;
  await withMemberRemoved(s, own, own ? peers : undefined, async (store) => {
    await asWorker(store, id);
    if (manager && !o.external) await setManager(store, id, false);
  });
}

/** The record may change under us (a label, a heartbeat's field): read it again and retry. */
async function asWorker(store: ClusterStore, id: string): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const cur = await store.get<NodeRecord>(K.node(id));
    if (!cur) return;
    const { MemberId: _gone, ...rest } = cur.value;
    if (await store.update(K.node(id), { ...rest, Spec: { ...rest.Spec, Role: 'worker' }, UpdatedAt: goTime() }, cur.modRevision)) return;
  }
  throw new Error('the node record kept changing');
}
