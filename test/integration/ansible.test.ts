import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { PACKAGE_ROOT, TestHost } from './harness.js';

const PLAYBOOK = join(PACKAGE_ROOT, 'test', 'integration', 'clients', 'ansible', 'site.yml');
const ANSIBLE = '/usr/bin/ansible-playbook';
const COLLECTION = '/usr/lib/python3/dist-packages/ansible_collections/community/docker';

interface Stats { ok: number; changed: number; failures: number; unreachable: number }

describe('Ansible community.docker against berthd', () => {
  const skip = !existsSync(ANSIBLE) || !existsSync(COLLECTION)
    ? 'Debian\'s ansible (with community.docker) is not installed: scripts/setup.sh installs it unless BERTH_SETUP_NO_ANSIBLE=1'
    : false;
  let host: TestHost;
  before(async () => { if (!skip) host = await TestHost.create(); });
  after(async () => {
    if (skip) return;
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  /** Runs the playbook with Debian's python (and its python3-docker); returns the play's stats. */
  async function play(state: 'present' | 'absent'): Promise<{ stats: Stats; out: string }> {
    const r = await run(ANSIBLE, ['-i', 'localhost,', PLAYBOOK, '-e', `docker_host=unix://${host.socket}`, '-e', `state=${state}`], {
      env: {
        ...process.env, ANSIBLE_STDOUT_CALLBACK: 'json', ANSIBLE_PYTHON_INTERPRETER: '/usr/bin/python3',
        ANSIBLE_LOCAL_TEMP: join(host.dir, 'ansible-tmp'), ANSIBLE_HOME: join(host.dir, 'ansible-home'),
        ANSIBLE_NOCOLOR: '1', ANSIBLE_RETRY_FILES_ENABLED: '0', PYTHONDONTWRITEBYTECODE: '1',
      },
    });
    let parsed: { stats?: Record<string, Stats> };
    try { parsed = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as typeof parsed; } catch { throw new Error(`ansible-playbook (${r.code}): ${r.stdout}\n${r.stderr}`); }
    const stats = parsed.stats?.localhost;
    assert.ok(stats, `no stats: ${r.stdout}`);
    assert.equal(stats.failures, 0, `a task failed:\n${r.stdout}`);
    assert.equal(r.code, 0, r.stderr);
    return { stats, out: r.stdout };
  }

  it('applies network, volume, image and container, changes nothing the second time, and removes them', { skip, timeout: 240_000 }, async () => {
    const first = await play('present');
    assert.ok(first.stats.changed >= 4, `first run changed ${first.stats.changed}`);
    const c = await host.api('GET', '/containers/ans-c/json');
    assert.equal(c.json.State.Running, true);
    assert.deepEqual(Object.keys(c.json.NetworkSettings.Networks), ['ans-net']);
    assert.ok(c.json.NetworkSettings.Networks['ans-net'].Aliases.includes('ans-alias'));
    assert.equal((await host.api('GET', '/images/ans-busybox:v1/json')).status, 200);
    const second = await play('present');
    // Idempotent: every module compared berth's inspect output with what it asked for and found no difference.
    assert.equal(second.stats.changed, 0, `second run changed ${second.stats.changed} task(s):\n${second.out}`);
    assert.ok(second.stats.ok >= 6);
    const gone = await play('absent');
    assert.ok(gone.stats.changed >= 4, `teardown changed ${gone.stats.changed}`);
    assert.equal((await host.api('GET', '/containers/ans-c/json')).status, 404);
    assert.equal((await host.api('GET', '/networks/ans-net')).status, 404);
    assert.equal((await host.api('GET', '/volumes/ans-vol')).status, 404);
    assert.equal((await host.api('GET', '/images/ans-busybox:v1/json')).status, 404);
  });
});
