import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SlowRequests } from '../../src/api/slowrequests.js';
import { ContainerRecords } from '../../src/engine/records.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('slow requests: what a request with no answer is waiting for', () => {
  it('logs a request past the threshold once per threshold passed, with its container\'s progress, and never after it answers', async () => {
    const lines: string[] = [];
    const asked: string[] = [];
    const slow = new SlowRequests((ref) => { asked.push(ref); return `container ${ref} is at: somewhere`; });
    const stop = slow.watch((l) => lines.push(l), 60, 10);
    try {
      await slow.track('POST /containers/web/restart', 'web', () => sleep(150));
      await slow.track('POST /networks/create', undefined, () => sleep(80));
      const n = lines.length;
      await sleep(100);
      assert.equal(lines.length, n, 'nothing once answered');
      assert.deepEqual(lines, [
        'berthd: POST /containers/web/restart has had no answer for 0 s; container web is at: somewhere',
        'berthd: POST /containers/web/restart has had no answer for 0 s; container web is at: somewhere',
        'berthd: POST /networks/create has had no answer for 0 s',
      ]);
      assert.deepEqual(asked, ['web', 'web']);
    } finally {
      stop();
    }
  });

  it('a reference that cannot be described still gets its line', async () => {
    const lines: string[] = [];
    const slow = new SlowRequests(() => { throw new Error('Multiple IDs found with provided prefix: a'); });
    const stop = slow.watch((l) => lines.push(l), 30, 10);
    try {
      await slow.track('DELETE /containers/a', 'a', () => sleep(50));
      assert.deepEqual(lines, ['berthd: DELETE /containers/a has had no answer for 0 s']);
    } finally {
      stop();
    }
  });

  it('a container\'s progress names its last step and who holds its lock, and forgets the holder with its work', async () => {
    const records = new ContainerRecords('/nonexistent');
    const id = 'f'.repeat(64);
    assert.equal(records.progress(id), 'container ffffffffffff is at: no step marked; its lock is free');
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    const policy = records.withLock(id, 'its restart policy', async () => {
      records.mark(id, 'start: the runtime creates the container');
      await held;
    });
    const restart = records.withLock(id, 'a start', async () => undefined);
    await sleep(20);
    assert.match(records.progress(id), /^container ffffffffffff is at: start: the runtime creates the container \(for 0\.\d s\); its lock is held by its restart policy \(for 0\.\d s\)$/);
    release();
    await Promise.all([policy, restart]);
    assert.match(records.progress(id), /^container ffffffffffff is at: a start: under way \(for 0\.\d s\); its lock is free$/);
  });
});
