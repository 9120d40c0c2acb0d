import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConmonRuntime } from '../../src/runtime/conmon.js';
import { pidAlive } from '../../src/util/process.js';

/**
 * Found by `npm run chaos` (seed 20261204, cycles 7 and 268): a `runc create` killed after it had
 * started the container's init left conmon (a subreaper) holding that init and waiting for a
 * report that never came; the start then waited for the 60 s bound, the container `created` and
 * holding its address meanwhile. A stand-in runtime reproduces it exactly: real conmon, a "create"
 * that starts a child and is then killed. The create must fail within seconds and leave nothing.
 */
describe('a runtime killed during create after starting the init', () => {
  let dir = '';
  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-orphaned-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('fails the create within seconds, with conmon and the orphaned init gone', async () => {
    const marker = join(dir, 'init.pid');
    const runc = join(dir, 'runc');
    // "create": an init that waits (as runc init on its exec fifo), then the runtime dies by SIGKILL.
    await fs.writeFile(runc, `#!/bin/sh\ncase " $* " in *" create "*) sleep 300 & echo $! > ${marker}; kill -9 $$ ;; *" state "*) echo "container does not exist" >&2; exit 1 ;; esac\nexit 0\n`, { mode: 0o755 });
    const bundle = join(dir, 'bundle');
    await fs.mkdir(bundle, { recursive: true });
    const runtime = new ConmonRuntime({ runcRoot: join(dir, 'root'), exitDir: join(dir, 'exits'), attachHelper: '/bin/false', runcPath: runc });
    await runtime.init();
    const id = 'f'.repeat(64);
    const t0 = Date.now();
    await assert.rejects(
      runtime.create({ id, name: 'orphaned', bundle, logPath: join(dir, 'ctr.log'), tty: false, openStdin: false, leaveStdinOpen: false }),
      /the runtime exited without reporting the container/,
    );
    const took = Date.now() - t0;
    assert.ok(took < 15_000, `failed after ${took} ms, not at the 60 s bound`);
    const conmonPid = Number(await fs.readFile(join(bundle, 'conmon.pid'), 'utf8').catch(() => '0'));
    if (conmonPid) {
      await new Promise((r) => setTimeout(r, 300));
      assert.throws(() => process.kill(conmonPid, 0), 'conmon is gone');
    }
    // The init conmon held was its child: with conmon killed it is reparented, and whoever runs the
    // failure path (runc delete --force, here a stand-in) takes it; the test kills it itself.
    const initPid = Number(await fs.readFile(marker, 'utf8'));
    try { process.kill(initPid, 'SIGKILL'); } catch { /* gone with conmon */ }
    // conmon's exit is reported as the container's (255: no exit code was recorded).
    await new Promise((r) => setTimeout(r, 500));
    runtime.close();
  });

  it('after a restart, the monitor of a start that was never recorded is ended with the runtime it is still waiting on', async () => {
    const marker = join(dir, 'slow.pid');
    const runc = join(dir, 'runc-slow');
    // A "create" still under way when berthd was killed: it would finish long after the restart.
    await fs.writeFile(runc, `#!/bin/sh\ncase " $* " in *" create "*) echo $$ > ${marker}; sleep 300 ;; *" state "*) echo "container does not exist" >&2; exit 1 ;; esac\nexit 0\n`, { mode: 0o755 });
    const bundle = join(dir, 'bundle-slow');
    await fs.mkdir(bundle, { recursive: true });
    const opts = { runcRoot: join(dir, 'root'), exitDir: join(dir, 'exits'), attachHelper: '/bin/false', runcPath: runc };
    const killed = new ConmonRuntime(opts);
    await killed.init();
    const id = 'e'.repeat(64);
    const pending = killed.create({ id, name: 'stray', bundle, logPath: join(dir, 'stray.log'), tty: false, openStdin: false, leaveStdinOpen: false });
    pending.catch(() => undefined);
    let runtimePid = 0;
    for (let i = 0; i < 100 && !runtimePid; i++) {
      runtimePid = Number(await fs.readFile(marker, 'utf8').catch(() => '0'));
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(runtimePid > 0, 'the stand-in create never ran');
    const conmonPid = Number(await fs.readFile(join(bundle, 'conmon.pid'), 'utf8'));
    killed.close();
    // The next berthd, with no record of that start.
    const next = new ConmonRuntime(opts);
    await next.init();
    await next.endStrayMonitor(id, bundle);
    // Alive and not a zombie (a killed child waits for its new parent to reap it).
    const alive = pidAlive;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(alive(conmonPid), false, 'the stray conmon lives on');
    assert.equal(alive(runtimePid), false, 'the create it waited on lives on');
    // One that is not this container's (or no longer alive) is left alone.
    await next.endStrayMonitor('d'.repeat(64), bundle);
    next.close();
  });
});
