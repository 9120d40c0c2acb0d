import { setManager } from './access.js';
import { goTime } from './ids.js';
import { K, type NodeRecord } from './keys.js';
import type { Session } from './session.js';
import type { ClusterStore } from './store.js';

/**
 * What a node that leaves tells the store. A manager with peers takes its member out of the
 * store's cluster and its record becomes a worker's; the last manager ends the swarm (an external
 * store is emptied of it). Everything after the member's removal goes through the other managers'
 * members only: the removed one stops serving, and a write the client sent it was lost (the
 * record stayed a manager's, `Down Unreachable`, and its user kept etcd's root role).
 */
export async function tellStoreLeaving(s: Session, o: { external: boolean }): Promise<void> {
  const id = s.state.nodeId;
  const rec = await s.store.get<NodeRecord>(K.node(id));
  const nodes = [...(await s.store.list<NodeRecord>(K.nodes)).values()];
  let otherManagers = nodes.filter((n) => n.value.ID !== id && n.value.Spec.Role === 'manager').map((n) => n.value);
  // With berth's own store, the managers that count are the store's members: those lost to a
  // --force-new-cluster keep their records but hold none of the data.
  if (!o.external) {
    const members = new Set((await s.store.members()).map((m) => m.ID));
    otherManagers = otherManagers.filter((n) => n.MemberId && members.has(n.MemberId));
  }
  if (s.state.role === 'manager' && otherManagers.length === 0) {
    if (o.external) await s.store.deletePrefix('/berth/');
    return;
  }
  if (!rec) return;
  const own = !o.external && rec.value.MemberId;
  const store = own ? await s.storeAt(otherManagers.map((n) => n.Addr)) : s.store;
  try {
    // A member already gone (the swarm was forced into a new cluster without it) costs nothing.
    if (own && (await store.members()).some((m) => m.ID === rec.value.MemberId)) await store.removeMember(rec.value.MemberId!);
    await asWorker(store, id);
    if (s.state.role === 'manager' && !o.external) await setManager(store, id, false);
  } finally {
    if (store !== s.store) store.close();
  }
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
