import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { removeCgroups } from '../../src/runtime/conmon.js';

/**
 * A killed `runc create` leaves a half-made container whose `runc init` may still be alive when
 * berth removes the container's cgroups: rmdir then fails with EBUSY. Found by `npm run chaos`
 * (seed 151227, cycle 952: a container left `created` with its cgroups under every hierarchy).
 * Here a real process sits in a real cgroup named like a container's, under berth's own branch.
 */
test('removeCgroups kills what is left in a container\'s cgroup and removes it', async (t) => {
  const id = randomBytes(32).toString('hex');
  const parent = '/sys/fs/cgroup/pids/berth';
  if (!existsSync('/sys/fs/cgroup/pids')) return t.skip('no cgroup v1 pids hierarchy on this machine');
  const madeParent = !existsSync(parent);
  const dir = join(parent, id);
  await fs.mkdir(dir, { recursive: true });
  const sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((r) => sleeper.on('exit', (_code, sig) => r(sig)));
  try {
    await fs.writeFile(join(dir, 'cgroup.procs'), String(sleeper.pid));
    assert.match(await fs.readFile(join(dir, 'cgroup.procs'), 'utf8'), new RegExp(`^${sleeper.pid}$`, 'm'), 'the process is in the cgroup');
    await assert.rejects(fs.rmdir(dir), { code: 'EBUSY' }, 'a busy cgroup cannot simply be removed');
    await removeCgroups(id);
    assert.equal(existsSync(dir), false, 'the cgroup is gone');
    assert.equal(await exited, 'SIGKILL', 'its process was killed');
  } finally {
    sleeper.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 100));
    await fs.rmdir(dir).catch(() => undefined);
    if (madeParent) await fs.rmdir(parent).catch(() => undefined);
  }
});
