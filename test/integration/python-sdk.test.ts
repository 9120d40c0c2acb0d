import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { PACKAGE_ROOT, TestHost } from './harness.js';

// Debian's interpreter and its python3-docker, not whatever python3 comes first on PATH.
const PYTHON = '/usr/bin/python3';
const SCRIPT = join(PACKAGE_ROOT, 'test', 'integration', 'clients', 'docker_sdk.py');
// Every step the script runs, in order: the test fails unless each one printed.
const STEPS = ['system', 'swarm-cleanup', 'images', 'volumes', 'networks', 'containers-run', 'containers-detached', 'exec', 'logs',
  'network-connect', 'lifecycle', 'archive', 'events', 'cleanup'];

async function sdkVersion(): Promise<string | undefined> {
  const r = await run(PYTHON, ['-c', 'import docker; print(docker.__version__)']);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

describe('the Docker SDK for Python against berthd', async () => {
  const version = await sdkVersion();
  const skip = version ? false : 'python3-docker is not installed (scripts/setup.sh installs it)';
  let host: TestHost;
  before(async () => { if (!skip) host = await TestHost.create(); });
  after(async () => {
    if (skip) return;
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  it(`runs containers, networks, volumes, images, exec, logs, events and cleanup through docker-py ${version ?? ''}`, { skip }, async () => {
    const r = await run(PYTHON, [SCRIPT, `unix://${host.socket}`, 'sdk'], { env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } });
    const done = r.stdout.split('\n').filter((l) => l.startsWith('STEP ')).map((l) => l.slice(5));
    assert.equal(r.code, 0, `docker-py failed after step "${done.at(-1)}":\n${r.stderr}\n${r.stdout}`);
    assert.deepEqual(done, STEPS);
    assert.match(r.stdout, /^ALL OK$/m);
    // Its cleanup left nothing of its own.
    const left = await host.api('GET', '/containers/json?all=1');
    assert.deepEqual(left.json, []);
  });
});
