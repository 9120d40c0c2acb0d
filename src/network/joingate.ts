import { NotFoundError } from '../util/errors.js';

/**
 * Joins and removals of networks kept apart: an endpoint being joined holds its network (libnetwork
 * creates the endpoint first), so a `network rm` in between does not take the bridge from under the
 * join, and a network being removed takes no new join.
 */
export class JoinGate {
  /** Networks joins are under way on, with their count. */
  private readonly joining = new Map<string, number>();
  private readonly removing = new Set<string>();

  constructor(private readonly nameOf: (networkId: string) => string | undefined) {}

  joined(networkId: string): boolean {
    return this.joining.has(networkId);
  }

  beingRemoved(networkId: string): boolean {
    return this.removing.has(networkId);
  }

  /** Counts `networkIds` as in use while `work` joins them. */
  async whileJoining<T>(networkIds: string[], work: () => Promise<T>): Promise<T> {
    // Being removed, or removed since the caller looked it up (a start holds endpoints of its record).
    for (const id of networkIds) if (this.removing.has(id) || this.nameOf(id) === undefined) throw new NotFoundError(`network ${this.nameOf(id) ?? id} not found`);
    for (const id of networkIds) this.joining.set(id, (this.joining.get(id) ?? 0) + 1);
    try {
      return await work();
    } finally {
      for (const id of networkIds) {
        const left = (this.joining.get(id) ?? 1) - 1;
        if (left) this.joining.set(id, left);
        else this.joining.delete(id);
      }
    }
  }

  async whileRemoving<T>(networkId: string, work: () => Promise<T>): Promise<T> {
    this.removing.add(networkId);
    try {
      return await work();
    } finally {
      this.removing.delete(networkId);
    }
  }
}
