import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pidAlive } from '../util/process.js';

/** How often a run with no monitor is looked at (its exit is recorded this much after it). */
const ORPHAN_CHECK_MS = 200;
/** How often a live monitor berthd did not start is looked at (one read of /proc each). */
const MONITOR_CHECK_MS = 1000;

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * The pid of the container's conmon named by its bundle's `conmon.pid` (berthd writes it at the
 * spawn), if that process is alive and is still this container's conmon: a pid is reused once its
 * process is gone.
 */
export function liveMonitor(id: string, bundle: string): { recorded: number; live?: number } {
  const recorded = Number.parseInt(readText(join(bundle, 'conmon.pid')), 10) || 0;
  const live = recorded && pidAlive(recorded) && readText(`/proc/${recorded}/cmdline`).includes(id) ? recorded : undefined;
  return { recorded, ...(live ? { live } : {}) };
}

/** One run of a container that no child-exit event of berthd's will report. */
interface WatchedRun {
  /** Its conmon, when one lives that berthd did not start (adopted after a restart). */
  monitorPid?: number;
  /** The container's init (runc's pid file in the bundle). */
  initPid?: number;
  nextCheck: number;
  /** When both processes were first seen gone with no exit recorded. */
  goneSince?: number;
}

export interface ExitWatchOptions {
  exitDir: string;
  /** An exit recorded (by conmon, or as 255 here): the runtime reports it. */
  onExitRecorded: (id: string) => void;
  log?: (line: string) => void;
}

/**
 * Notices the end of container runs whose exit no event of berthd's will bring: runs adopted after
 * a berthd restart (their conmon is no child of this berthd) and runs whose conmon was killed (no
 * one is left to write the exit). One timer reads /proc for all of them, never runc (a runc start
 * per container per tick swamped a host adopting hundreds). A run whose monitor and init are both
 * gone with no exit recorded gets exit 255, so stop, rm and wait end.
 *
 * A watch belongs to one run: `forget` is called when that run's exit is handled (runc delete) and
 * when a new run of the same container begins, so an old watch never records an exit for a new run.
 */
export class ExitWatch {
  private readonly runs = new Map<string, WatchedRun>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly o: ExitWatchOptions) {}

  /** A run berthd did not start: watched through its monitor while that lives. */
  adopt(id: string, bundle: string, initPid?: number): void {
    const { recorded, live: monitorPid } = liveMonitor(id, bundle);
    if (!monitorPid) this.o.log?.(`berthd: ${id.slice(0, 12)}: its monitor (conmon ${recorded || '?'}) is gone: berthd watches the container itself`);
    this.watch(id, { monitorPid, initPid: initPid || pidFromBundle(bundle) });
  }

  /** A run whose monitor died: watched until its init is gone. */
  orphaned(id: string, bundle: string): void {
    this.watch(id, { initPid: pidFromBundle(bundle) });
  }

  forget(id: string): void {
    this.runs.delete(id);
    if (!this.runs.size) this.stopTimer();
  }

  watching(id: string): boolean {
    return this.runs.has(id);
  }

  close(): void {
    this.runs.clear();
    this.stopTimer();
  }

  private watch(id: string, run: Omit<WatchedRun, 'nextCheck'>): void {
    this.runs.set(id, { ...run, nextCheck: 0 });
    this.timer ??= setInterval(() => this.check(), ORPHAN_CHECK_MS);
    this.timer.unref();
    this.check();
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Synchronous on purpose: between reading the exit directory and writing 255 nothing else of
   * berthd's runs, so an exit handled (forget) or a new run begun cannot slip in between.
   */
  private check(): void {
    const now = Date.now();
    for (const [id, run] of this.runs) {
      if (run.nextCheck > now) continue;
      if (this.exitRecorded(id)) {
        this.forget(id);
        this.o.onExitRecorded(id);
        continue;
      }
      if (run.monitorPid && pidAlive(run.monitorPid)) {
        run.nextCheck = now + MONITOR_CHECK_MS;
        continue;
      }
      if (run.monitorPid) {
        this.o.log?.(`berthd: ${id.slice(0, 12)}: its monitor (conmon ${run.monitorPid}) died: berthd watches the container itself`);
        run.monitorPid = undefined;
      }
      if (run.initPid && pidAlive(run.initPid) && readText(`/proc/${run.initPid}/cgroup`).includes(id)) {
        run.goneSince = undefined;
        run.nextCheck = now + ORPHAN_CHECK_MS;
        continue;
      }
      // A monitor that has just reaped the init writes the exit a moment later: one more look first.
      if (run.goneSince === undefined) {
        run.goneSince = now;
        continue;
      }
      this.forget(id);
      this.o.log?.(`berthd: ${id.slice(0, 12)}: its monitor (conmon) is gone and so is its process: exit recorded as 255`);
      try {
        writeFileSync(join(this.o.exitDir, id), '255', { flag: 'wx' });
      } catch { /* recorded meanwhile: that exit is the one reported */ }
      this.o.onExitRecorded(id);
    }
  }

  private exitRecorded(id: string): boolean {
    return readText(join(this.o.exitDir, id)).trim() !== '';
  }
}

function pidFromBundle(bundle: string): number | undefined {
  return Number.parseInt(readText(join(bundle, 'pidfile')), 10) || undefined;
}
