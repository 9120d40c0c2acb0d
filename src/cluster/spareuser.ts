import { errorMessage } from '../util/errors.js';
import { addNodeUser, removeNodeUser } from './access.js';
import { newNodeId } from './ids.js';
import { K, SECRET, type NodeRecord } from './keys.js';
import type { Session } from './session.js';

/** Where a manager notes its spare node ID (managers only, like the CA key), so none is ever lost. */
export const SPARES = `${SECRET}spare/`;
export const spareOf = (managerId: string) => `${SPARES}${managerId}`;

/**
 * A node ID and its etcd user made ahead of the join that takes them: a join would otherwise wait
 * for two writes through raft one after the other (the user, then its role) before the joiner may
 * use its certificate. Like the spare key of a joiner it is made while nothing waits, used once,
 * and replaced after each join. A spare user holds only the node role and no certificate names it
 * until a join signs one, so it opens nothing.
 *
 * Each manager notes its spare in the store before making the user; a spare whose manager is
 * gone, left or was demoted is removed by the next manager that makes one.
 */
export class SpareUsers {
  private spare?: { session: Session; id: Promise<string | undefined> };

  /** `own`: berth runs the store's members and its users; an external store's are its operator's, and get none. */
  constructor(private readonly own: boolean, private readonly log: (m: string) => void) {}

  /** Makes this manager's spare unless this session has one (or one is being made). */
  prepare(s: Session): void {
    if (!this.own || this.spare?.session === s || s.state.role !== 'manager') return;
    const p = this.make(s).catch((e) => {
      this.log(`cluster: preparing a node ID for the next join: ${errorMessage(e)}`);
      return undefined;
    });
    const spare = { session: s, id: p };
    this.spare = spare;
    void p.then((id) => { if (!id && this.spare === spare) this.spare = undefined; });
  }

  /** The spare for one join on this session, or none; the next is made after it (`prepare`). */
  async take(s: Session): Promise<string | undefined> {
    const spare = this.spare;
    this.spare = undefined;
    return spare?.session === s ? spare.id : undefined;
  }

  private async make(s: Session): Promise<string> {
    const me = s.state.nodeId;
    const [noted, nodes] = await Promise.all([
      s.store.list<{ ID: string }>(SPARES),
      s.store.list<NodeRecord>(K.nodes),
    ]);
    // Spares of managers that are no longer managers (gone, left, demoted) go with their users.
    const stale = [...noted].filter(([key]) => {
      const owner = nodes.get(K.node(key.slice(SPARES.length)));
      return key !== spareOf(me) && owner?.value.Spec.Role !== 'manager';
    });
    for (const [key, v] of stale) {
      await removeNodeUser(s.store, v.value.ID);
      await s.store.apply([], [key]);
    }
    const id = noted.get(spareOf(me))?.value.ID ?? newNodeId();
    if (!noted.has(spareOf(me))) await s.store.put(spareOf(me), { ID: id });
    await addNodeUser(s.store, id, 'worker');
    return id;
  }
}
