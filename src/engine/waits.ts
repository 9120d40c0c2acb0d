import type { ContainerRecord } from './types.js';

export type WaitCondition = 'not-running' | 'next-exit' | 'removed';
export interface WaitResult { StatusCode: number; Error: null | { Message: string } }

interface Waiter { condition: WaitCondition; resolve: (r: WaitResult) => void }

/** POST /containers/{id}/wait callers, and one "this run has exited" signal per running container. */
export class ContainerWaits {
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly exits = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  /** Exits being recorded now (the daemon's start waits for them before any policy starts a container). */
  private readonly recording = new Set<Promise<void>>();

  /** Registers synchronously, before any await, so an exit right after cannot be missed. */
  wait(c: ContainerRecord, condition: WaitCondition): Promise<WaitResult> {
    // A restarting container counts as running, as in Docker: its waiters see the next exit.
    if (condition === 'not-running' && !c.State.Running && !c.State.Restarting) return Promise.resolve({ StatusCode: c.State.ExitCode, Error: null });
    return new Promise((resolve) => {
      const list = this.waiters.get(c.Id) ?? [];
      list.push({ condition, resolve });
      this.waiters.set(c.Id, list);
    });
  }

  notify(c: ContainerRecord, conditions: WaitCondition[]): void {
    const list = this.waiters.get(c.Id);
    if (!list) return;
    const keep: Waiter[] = [];
    for (const w of list) {
      if (conditions.includes(w.condition)) w.resolve({ StatusCode: c.State.ExitCode, Error: c.State.Error ? { Message: c.State.Error } : null });
      else keep.push(w);
    }
    if (keep.length) this.waiters.set(c.Id, keep); else this.waiters.delete(c.Id);
  }

  /** A new run begins: its exit will be signalled. */
  expectExit(id: string): void {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => { resolve = r; });
    this.exits.set(id, { promise, resolve });
  }

  expectsExit(id: string): boolean {
    return this.exits.has(id);
  }

  exited(id: string): Promise<void> {
    return this.exits.get(id)?.promise ?? Promise.resolve();
  }

  signalExit(id: string): void {
    this.exits.get(id)?.resolve();
    this.exits.delete(id);
  }

  /** An exit being recorded: `allRecorded` waits for it. */
  recordingExit(handling: Promise<void>): Promise<void> {
    const tracked: Promise<void> = handling.finally(() => this.recording.delete(tracked));
    this.recording.add(tracked);
    return tracked;
  }

  /** Every exit being recorded has been, including any that began meanwhile. */
  async allRecorded(): Promise<void> {
    while (this.recording.size) await Promise.allSettled([...this.recording]);
  }
}

/** True when `p` settled within `ms`. */
export async function raceTimeout(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<boolean>((r) => { timer = setTimeout(() => r(false), ms); });
  const ok = await Promise.race([p.then(() => true), t]);
  clearTimeout(timer);
  return ok;
}
