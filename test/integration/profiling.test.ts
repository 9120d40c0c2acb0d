import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TestHost, waitFor } from './harness.js';

describe('berthd: SIGUSR2 profiles its CPU', () => {
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
});
