import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConmonRuntime } from '../../src/runtime/conmon.js';

/**
 * Found by `npm run chaos` (seed 20261205): a `runc kill` or `runc delete` that was itself killed
 * said nothing, and stop or rm -f answered 500 with an empty message. These commands are
 * idempotent: berth runs them once more, and a failure always says what failed.
 */
describe('runc kill, delete and state when runc dies without a word', () => {
  let dir = '';
  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-runc-retry-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** A stand-in runc: its first `failures` calls die as a killed process would (status 137, no output); then it prints `stdout`. */
  async function fakeRunc(failures: number, stdout = ''): Promise<{ runtime: ConmonRuntime; calls: () => Promise<string[]> }> {
    const log = join(dir, `calls-${failures}-${Date.now()}`);
    const script = join(dir, `runc-${failures}-${Date.now()}`);
    await fs.writeFile(script, `#!/bin/sh\necho "$*" >> ${log}\nn=$(wc -l < ${log})\n[ "$n" -le ${failures} ] && exit 137\necho '${stdout}'\nexit 0\n`, { mode: 0o755 });
    const runtime = new ConmonRuntime({ runcRoot: join(dir, 'root'), exitDir: join(dir, 'exits'), attachHelper: '/bin/false', runcPath: script });
    return { runtime, calls: async () => (await fs.readFile(log, 'utf8')).trim().split('\n') };
  }

  it('kill is run again once and succeeds', async () => {
    const { runtime, calls } = await fakeRunc(1);
    await runtime.kill('c1', 'SIGTERM');
    assert.equal((await calls()).length, 2);
  });

  it('a kill that dies twice fails with a message that says so', async () => {
    const { runtime } = await fakeRunc(2);
    await assert.rejects(runtime.kill('c1', 'SIGTERM'), /runc kill exited with status 137 and no message/);
  });

  it('state is asked again, and a runc that keeps dying is an error, never "does not exist"', async () => {
    const { runtime } = await fakeRunc(2, '{"status":"running","pid":42}');
    assert.deepEqual(await runtime.state('c3'), { status: 'running', pid: 42 });
    const { runtime: dying } = await fakeRunc(5);
    await assert.rejects(dying.state('c3'), /runc state exited with status 137 and no message/);
  });

  it('state is undefined when runc says the container does not exist', async () => {
    const script = join(dir, 'runc-missing');
    await fs.writeFile(script, '#!/bin/sh\necho "container does not exist" >&2\nexit 1\n', { mode: 0o755 });
    const runtime = new ConmonRuntime({ runcRoot: join(dir, 'root'), exitDir: join(dir, 'exits'), attachHelper: '/bin/false', runcPath: script });
    assert.equal(await runtime.state('c4'), undefined);
  });

  it('delete is run again once', async () => {
    const { runtime, calls } = await fakeRunc(1);
    // runc's own record of the container: its directory under runc's root.
    await fs.mkdir(join(dir, 'root', 'c2'), { recursive: true });
    await runtime.delete('c2');
    assert.deepEqual((await calls()).map((l) => l.split(' ').slice(-3).join(' ')), ['delete --force c2', 'delete --force c2']);
  });

  it('delete asks no runc about a container runc has no directory for (an exit deleted it already)', async () => {
    const { runtime, calls } = await fakeRunc(0);
    await runtime.delete('c5');
    await assert.rejects(calls(), /ENOENT/, 'runc was started');
  });
});
