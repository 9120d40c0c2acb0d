import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TestHost, waitFor } from './harness.js';

describe('berthd: SIGUSR2 profiles its CPU; a slow request is logged with where it is', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => { assert.deepEqual(await host.destroy(), []); });

  it('starts a profile at one SIGUSR2 and writes it under the root at the next, answering all along', async () => {
    const pid = host.daemonPid!;
    const dir = join(host.root, 'profiles');
    process.kill(pid, 'SIGUSR2');
    await waitFor(async () => host.daemonLog.includes('a CPU profile started'), 'the profile to start');
    for (let i = 0; i < 20; i++) assert.equal((await host.api('GET', '/containers/json?all=1')).status, 200);
    process.kill(pid, 'SIGUSR2');
    const file = await waitFor(async () => (await fs.readdir(dir).catch(() => [] as string[])).find((f) => f.endsWith(`-${pid}.cpuprofile`)), 'the profile file');
    const profile = JSON.parse(await fs.readFile(join(dir, file), 'utf8')) as { nodes: Array<{ callFrame: { url: string } }>; samples: number[] };
    assert.ok(profile.samples.length > 0, 'samples');
    assert.ok(profile.nodes.some((n) => n.callFrame.url.includes('/dist/src/')), 'berthd\'s own code in it');
    assert.match(host.daemonLog, new RegExp(`a CPU profile written to ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/`));
    assert.equal(host.daemonPid, pid);
    assert.equal((await host.api('GET', '/_ping')).status, 200);
  });

  it('--slow-request logs a request with no answer yet, with the step it waits at, and not one that has answered', async () => {
    await host.stopDaemon('SIGTERM');
    await host.startDaemon(['--slow-request', '1']);
    // A shell as the container's first process ignores SIGTERM: the stop waits out its timeout.
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'sleep 600'] });
    const from = host.daemonLog.length;
    const t0 = Date.now();
    const stop = await host.api('POST', `/containers/${id}/stop?t=3`);
    assert.equal(stop.status, 204);
    assert.ok(Date.now() - t0 >= 2900, 'the stop waited out its timeout');
    const said = host.daemonLog.slice(from).split('\n').filter((l) => l.includes('has had no answer'));
    assert.ok(said.length >= 1 && said.length <= 3, said.join('\n'));
    assert.match(said[0]!, new RegExp(`^berthd: POST /containers/${id}/stop has had no answer for [12] s; container ${id.slice(0, 12)} is at: stop: waiting up to 3 s for the exit after SIGTERM \\(for \\d\\.\\d s\\); its lock is free$`));
    assert.equal((await host.api('DELETE', `/containers/${id}`)).status, 204);
    // A request that waits by design (wait, attach, streams) says nothing, however long.
    const other = await host.runDetached({ Cmd: ['sleep', '600'] });
    const quiet = host.daemonLog.length;
    const waited = host.api('POST', `/containers/${other}/wait`);
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal((await host.api('DELETE', `/containers/${other}?force=1`)).status, 204);
    assert.equal((await waited).status, 200);
    assert.doesNotMatch(host.daemonLog.slice(quiet), /has had no answer/);
  });
});
