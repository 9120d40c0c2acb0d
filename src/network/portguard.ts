import { deleteLink } from '../kernel/bridge.js';
import type { EndpointSource } from './firewall.js';
import { guardedSource } from './guardread.js';
import { allowSourceOps, revokeSourceOps, writeGuard } from './guardsets.js';

/**
 * The source-guard allowances of the endpoint ports a driver made (the host ends of veths, by
 * port name). Those of an endpoint joined by an earlier berthd (before a restart) are not in
 * memory: they are read back from the kernel, which keeps them across restarts.
 */
export class PortGuards {
  private readonly sources = new Map<string, EndpointSource>();

  /** Writes a port's allowances once `guardReady` settles; the port may join its bridge when the result does. */
  allow(src: EndpointSource, guardReady: Promise<void>): Promise<void> {
    const allowed = guardReady.then(() => writeGuard(allowSourceOps(src)));
    allowed.catch(() => undefined);
    this.sources.set(src.port, src);
    return allowed;
  }

  /** Drops a port's allowances. */
  async revoke(port: string): Promise<void> {
    const src = this.sources.get(port) ?? (await guardedSource(port));
    this.sources.delete(port);
    if (!src) return;
    await writeGuard(revokeSourceOps(src)).catch((e: Error) => console.error(`berthd: source guard of ${port}: ${e.message}`));
  }

  /** A port whose network is gone: the port, then its allowances, if it is guarded at all. */
  async forget(port: string): Promise<void> {
    if (!this.sources.has(port) && !(await guardedSource(port))) return;
    await deleteLink(port);
    await this.revoke(port);
  }
}
