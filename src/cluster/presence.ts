import type { Lease } from 'etcd3';
import { errorMessage } from '../util/errors.js';
import { retryAuthOld, type ClusterStore } from './store.js';

/**
 * A node's presence in the store: one key under an etcd lease of a few seconds, kept alive while
 * the node can reach the store. A node that dies or is cut off stops renewing it, etcd drops the
 * key when the TTL runs out, and every node sees it Down; when it comes back it takes a new lease.
 * The same lease is what later pieces write a node's own records under (endpoints), so they go
 * with it.
 */
export class Presence {
  private lease?: Lease;
  private stopped = false;
  private retry?: NodeJS.Timeout;
  /** Whoever needs the current lease id (records written under it) hears of each new one. */
  onLease?: (lease: Lease) => void;

  constructor(private readonly store: ClusterStore, private readonly key: string, private readonly value: () => unknown, private readonly ttlSec: number, private readonly log: (m: string) => void) {}

  /** Resolves once the first presence key is written (or that attempt failed: later ones retry). */
  start(): Promise<void> {
    this.stopped = false;
    return this.acquire();
  }

  get current(): Lease | undefined { return this.lease; }

  private async acquire(): Promise<void> {
    if (this.stopped) return;
    const lease = this.store.client.lease(this.ttlSec, { autoKeepAlive: true });
    this.lease = lease;
    let lost = false;
    lease.on('lost', (e) => {
      // Each write still made under a lost lease says so again (the applied revision's retries, a
      // claim): were each to put the next lease off by another second, a host back from a partition
      // went 3 s and more without one, its containers out of every other host's view (chaos across
      // hosts). The first word is enough; the next lease is tried at once.
      if (this.stopped || this.lease !== lease || lost) return;
      lost = true;
      this.log(`cluster: presence lease lost (${errorMessage(e)}); taking a new one`);
      this.again(0);
    });
    try {
      await retryAuthOld(() => lease.put(this.key).value(JSON.stringify(this.value())).exec());
      this.onLease?.(lease);
    } catch (e) {
      if (this.stopped || this.lease !== lease) return;
      lease.release();
      this.again();
    }
  }

  /** The next lease in `ms`: at once after a loss, a second after a failed try (a store that does not answer). */
  private again(ms = 1000): void {
    clearTimeout(this.retry);
    this.retry = setTimeout(() => void this.acquire(), ms);
    this.retry.unref();
  }

  /** With `revoke`, the node shows Down at once (a clean leave); without, when the TTL runs out. */
  async stop(revoke: boolean): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    const lease = this.lease;
    this.lease = undefined;
    if (!lease) return;
    if (revoke) await Promise.race([lease.revoke().catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    lease.release();
  }
}
