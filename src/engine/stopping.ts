import type { ContainerRuntime } from '../runtime/runtime.js';
import type { ContainerRecords } from './records.js';
import type { ContainerRecord, ContainerStatus } from './types.js';
import { raceTimeout } from './waits.js';

/**
 * Docker's stop of a running (thawed) container: its stop signal, up to `timeoutSec` for the exit
 * (a negative timeout waits as long as it takes, 0 not at all), then SIGKILL; answered once the
 * exit has been recorded. `exited` is the run's exit, taken before anything could end it.
 */
export async function signalAndSettle(runtime: ContainerRuntime, records: ContainerRecords, c: ContainerRecord, exited: Promise<void>, timeoutSec: number): Promise<void> {
  const step = (what: string) => records.mark(c.Id, what);
  const recorded = () => {
    step('stop: the exit is being recorded');
    return records.settled(c.Id);
  };
  if (timeoutSec !== 0) {
    const signal = c.Config.StopSignal || 'SIGTERM';
    step(`stop: runc kill ${signal}`);
    await runtime.kill(c.Id, signal);
    step(`stop: waiting ${timeoutSec < 0 ? 'as long as it takes' : `up to ${timeoutSec} s`} for the exit after ${signal}`);
    if (timeoutSec < 0) await exited;
    if (timeoutSec < 0 || (await raceTimeout(exited, timeoutSec * 1000))) return recorded();
  }
  step('stop: runc kill SIGKILL');
  await runtime.kill(c.Id, 'KILL');
  step('stop: waiting for the exit after SIGKILL');
  await exited;
  await recorded();
}

/** A frozen process never handles a signal, not even SIGKILL: stop, kill and rm thaw it first, as Docker does. */
export async function thaw(runtime: ContainerRuntime, records: ContainerRecords, c: ContainerRecord): Promise<void> {
  if (!c.State.Paused) return;
  await runtime.resume(c.Id).catch(async (e) => {
    // A process that has exited meanwhile (its exit is being recorded) needs no thawing.
    const st = await runtime.state(c.Id).catch(() => undefined);
    if (st && st.status !== 'stopped') throw e;
  });
  Object.assign(c.State, { Paused: false, Status: (c.State.Running ? 'running' : c.State.Status) as ContainerStatus });
  await records.save(c);
}
