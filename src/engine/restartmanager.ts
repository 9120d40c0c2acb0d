import { shortId } from '../util/ids.js';
import type { ContainerRecord } from './types.js';

/**
 * Docker's restart manager, per container and per run of the daemon: the back-off between
 * restarts and the restarts waiting it out. Deciding and recording stay with the lifecycle.
 */
export class RestartManager {
  /** Restarts a policy has scheduled, waiting out their back-off (the container shows "restarting"). */
  private readonly pending = new Map<string, NodeJS.Timeout>();
  /** Each container's current back-off. */
  private readonly delays = new Map<string, number>();
  /**
   * Runs whose exit must not restart them (Docker's ExitOnNext: stop, SIGKILL, rm, restart). In
   * memory only, as Docker's: a berthd restart gives every run a manager nobody has cancelled, so a
   * stop cut short by the crash (the flag saved with the record by a connect meanwhile) no longer
   * leaves a running container that its policy would never bring back (chaos seed 424242, cycle 310).
   */
  private readonly exitOnNext = new Set<string>();

  /** 100 ms, doubled per restart up to a minute, back to 100 ms after a run of 10 s. */
  nextDelay(id: string, ranMs: number): number {
    const last = ranMs >= 10_000 ? 0 : this.delays.get(id) ?? 0;
    const next = last === 0 ? 100 : Math.min(last * 2, 60_000);
    this.delays.set(id, next);
    return next;
  }

  schedule(id: string, delayMs: number, restart: () => void): void {
    this.pending.set(id, setTimeout(() => {
      this.pending.delete(id);
      restart();
    }, delayMs));
  }

  cancel(id: string): void {
    clearTimeout(this.pending.get(id));
    this.pending.delete(id);
  }

  /** The current run's exit is the user's doing: its policy does not restart it. */
  cancelNextExit(id: string): void {
    this.exitOnNext.add(id);
  }

  /** Whether the run that ended was cancelled; a run's end or a new run's start clears it. */
  takeCancelled(id: string): boolean {
    return this.exitOnNext.delete(id);
  }

  /** A user's start begins with a fresh manager (Docker's containerStart with reset). */
  reset(id: string): void {
    this.delays.delete(id);
  }
}

/** restartmanager.ShouldRestart's rule, for a manager that has not been cancelled. */
export function policyRestarts(c: ContainerRecord, exitCode: number): boolean {
  const p = c.HostConfig.RestartPolicy;
  switch (p?.Name) {
    case 'always': return true;
    case 'unless-stopped': return !c.ManuallyStopped;
    case 'on-failure': return exitCode !== 0 && (!p.MaximumRetryCount || c.RestartCount < p.MaximumRetryCount);
    default: return false;
  }
}

/** Who holds the port a policy's start was refused, for the log (Docker's words in the error do not say). */
export function portHolder(e: unknown, containers: Map<string, ContainerRecord>): string {
  const owner = (e as { heldBy?: string } | undefined)?.heldBy;
  if (!owner) return '';
  const c = containers.get(owner);
  return ` (held by ${shortId(owner)}${c ? ` ${c.Name}, ${c.State.Status}` : ''})`;
}
