import type { AttachSession, ContainerRuntime } from '../runtime/runtime.js';

/**
 * Attach sessions asked for before a container starts: connected as soon as the runtime has
 * created the container and before its process runs, so no early output is lost.
 */
export class PendingAttachments {
  private readonly pending = new Map<string, Array<(s: AttachSession | Error) => void>>();

  constructor(private readonly runtime: ContainerRuntime) {}

  wait(id: string): Promise<AttachSession> {
    return new Promise((resolve, reject) => {
      const list = this.pending.get(id) ?? [];
      list.push((s) => (s instanceof Error ? reject(s) : resolve(s)));
      this.pending.set(id, list);
    });
  }

  async connect(id: string, bundle: string): Promise<void> {
    const list = this.pending.get(id);
    if (!list) return;
    this.pending.delete(id);
    await Promise.all(list.map(async (cb) => {
      try { cb(await this.runtime.attach(bundle)); } catch (e) { cb(e as Error); }
    }));
  }

  fail(id: string, e: Error): void {
    const list = this.pending.get(id);
    this.pending.delete(id);
    for (const cb of list ?? []) cb(e);
  }
}
