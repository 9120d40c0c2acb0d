import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { pidAlive } from '../../src/util/process.js';

describe('pidAlive', () => {
  it('is true for a running process, false for none and for a zombie nobody reaps', async () => {
    assert.equal(pidAlive(process.pid), true);
    // A pid above the kernel's pid_max can never be used.
    assert.equal(pidAlive(Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1), false);
    // sh starts a short sleep and becomes a long one, which never waits for it: the short one,
    // ending after the exec (before it, sh itself could reap it), stays a zombie while the long one runs.
    const parent = spawn('sh', ['-c', 'sleep 1 & echo $!; exec sleep 10'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const zombie = Number(await new Promise<string>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(d.toString()))));
      let state = '';
      for (let i = 0; i < 250 && state !== 'Z'; i++) {
        await new Promise((r) => setTimeout(r, 20));
        const stat = readFileSync(`/proc/${zombie}/stat`, 'utf8');
        state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      }
      assert.equal(state, 'Z', 'the child never became a zombie');
      assert.equal(pidAlive(zombie), false);
      assert.equal(pidAlive(parent.pid!), true);
    } finally {
      parent.kill('SIGKILL');
    }
  });
});
