import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedQueue, SerialQueue } from '../../src/util/serial.js';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('jobs of one key run one at a time, in order; other keys do not wait for them', async () => {
  const q = new KeyedQueue();
  const log: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  const a1 = q.run('a', async () => { log.push('a1+'); await gate; log.push('a1-'); return 'a1'; });
  const a2 = q.run('a', async () => { log.push('a2'); return 'a2'; });
  // b1 finishes while a1 is held: a key of its own waits for nothing of 'a'.
  assert.equal(await q.run('b', async () => 'b1'), 'b1');
  assert.deepEqual(log, ['a1+']);
  release();
  assert.deepEqual(await Promise.all([a1, a2]), ['a1', 'a2']);
  assert.deepEqual(log, ['a1+', 'a1-', 'a2']);
});

test('a failed job gives its error to its caller and does not stop the next', async () => {
  const q = new SerialQueue();
  const failed = q.run(async () => { throw new Error('boom'); });
  const next = q.run(async () => 'ran');
  await assert.rejects(failed, /boom/);
  assert.equal(await next, 'ran');
});

test('settled waits for the jobs queued so far, and a key with nothing queued is settled at once', async () => {
  const q = new KeyedQueue();
  let done = false;
  void q.run('k', async () => { await tick(20); done = true; });
  await q.settled('k');
  assert.equal(done, true);
  await q.settled('never-used');
  await tick(0);
  assert.equal((q as unknown as { tails: Map<string, unknown> }).tails.size, 0, 'finished keys are forgotten');
});
