/**
 * A CPU profile of berthd taken while it runs, for whoever asks where its time goes: the first
 * SIGUSR2 starts V8's sampling profiler, the next one writes what it took to
 * `cpu-<time>-<pid>.cpuprofile` in `dir` (Chrome DevTools and `node --cpu-prof`'s format). Unlike
 * `--cpu-prof` it covers the moments chosen (the steps of a bench), not the whole life of the
 * process, and needs no restart.
 */
import { promises as fs } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

export function profileOnSignal(dir: string, log: (m: string) => void): void {
  let session: Session | undefined;
  const post = <T>(method: string, params?: object) => new Promise<T>((resolve, reject) => {
    session!.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res as T)));
  });
  process.on('SIGUSR2', () => void (async () => {
    if (!session) {
      session = new Session();
      session.connect();
      await post('Profiler.enable');
      await post('Profiler.start');
      log('a CPU profile started (SIGUSR2 again writes it)');
      return;
    }
    const { profile } = await post<{ profile: unknown }>('Profiler.stop');
    session.disconnect();
    session = undefined;
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, `cpu-${new Date().toISOString().replace(/[:.]/g, '-')}-${process.pid}.cpuprofile`);
    await fs.writeFile(file, JSON.stringify(profile));
    log(`a CPU profile written to ${file}`);
  })().catch((e: Error) => log(`a CPU profile: ${e.message}`)));
}
