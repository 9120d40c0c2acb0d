import type { EndpointState } from '../model/network.js';
import { usesEmbeddedDns } from './endpoints.js';
import type { NetworkRegistry } from './registry.js';
import type { Resolver } from './resolver.js';

/** Sends a namespace's 127.0.0.11:53 to the resolver's port (an nft rule inside it). */
export type RedirectResolver = (netnsPath: string, port: number, freshNamespace: boolean) => Promise<void>;

/**
 * The embedded DNS side of the sandboxes: sockets on 127.0.0.11 inside each container's own
 * namespace, served by berthd, with 127.0.0.11:53 sent to their port (Docker's layout, for every
 * driver). Apart from the sandbox so the endpoint order there reads without the resolver's
 * bookkeeping.
 */
export class SandboxDns {
  private resolver?: Resolver;
  /** The resolver port each sandbox's 127.0.0.11:53 is sent to, to skip rewriting the rule unchanged. */
  private readonly programmed = new Map<string, number>();

  constructor(private readonly registry: NetworkRegistry, private readonly redirect: RedirectResolver) {}

  get attached(): boolean {
    return !!this.resolver;
  }

  attach(resolver: Resolver): void {
    this.resolver = resolver;
  }

  /** A container left with no network that has the embedded DNS loses its resolver. */
  async program(id: string, netnsPath: string, endpoints: Record<string, EndpointState>, freshNamespace = false): Promise<void> {
    const resolver = this.resolver;
    if (!resolver) return;
    if (!usesEmbeddedDns(this.registry, endpoints, true)) return this.close(id);
    if (freshNamespace) this.programmed.delete(id);
    const fresh = !resolver.hasSandbox(id);
    // A resolver opened again (a disconnect from the last network with the embedded DNS, then a
    // connect) takes the port the namespace's rule still names: rewriting that rule waits ~15 ms
    // for the kernel (its old rules are freed after an RCU grace period).
    const port = resolver.serveSandbox(id, netnsPath, this.programmed.get(id));
    // connect/disconnect of another network leaves the resolver as it was: skip the nft run.
    if (this.programmed.get(id) === port) return;
    this.programmed.delete(id);
    try {
      await this.redirect(netnsPath, port, freshNamespace);
      this.programmed.set(id, port);
    } catch (e) {
      if (fresh) resolver.closeSandbox(id);
      throw e;
    }
  }

  /**
   * berthd's sockets inside a namespace would keep it, and its interfaces, alive: they go first.
   * The rule stays in the namespace, and so does the note of its port, unless the sandbox itself
   * goes (`forget`).
   */
  close(id: string, forget = false): void {
    if (forget) this.programmed.delete(id);
    this.resolver?.closeSandbox(id);
  }

  closeAll(): void {
    this.resolver?.closeAll();
  }
}
