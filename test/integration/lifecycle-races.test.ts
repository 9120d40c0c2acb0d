import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestHost } from './harness.js';

/**
 * `rm` looks at the container before it takes the container's lock; a start queued ahead of it can
 * make the container run meanwhile. Found by `npm run chaos -- --seed 46008 --workers 8`, cycle 6:
 * a start, an `rm -f` behind it and a `stop` at the moment the start ended; the removal ended the
 * run, its exit found no container to be recorded on, and the stop waited for it for ever.
 */
describe('lifecycle races: a removal queued behind a start', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => { assert.deepEqual(await host.destroy(), []); });

  /** Sends a start and, while it holds the container's lock, an rm; returns both answers' promises. */
  async function startThenRemove(force: boolean): Promise<{ id: string; started: ReturnType<TestHost['api']>; removed: ReturnType<TestHost['api']> }> {
    const c = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['sleep', '600'] });
    assert.equal(c.status, 201);
    const id = c.json.Id as string;
    const started = host.api('POST', `/containers/${id}/start`);
    // The start takes the lock at once and holds it for tens of milliseconds (network, runc).
    await new Promise((r) => setTimeout(r, 5));
    const removed = host.api('DELETE', `/containers/${id}${force ? '?force=1' : ''}`);
    return { id, started, removed };
  }

  it('a stop while a forced removal ends the run a queued start began gets its answer', async () => {
    for (let round = 0; round < 8; round++) {
      const { id, started, removed } = await startThenRemove(true);
      // Stop as soon as the container shows running, inside the removal's window.
      let stop: ReturnType<TestHost['api']> | undefined;
      for (let i = 0; i < 400 && !stop; i++) {
        const r = await host.api('GET', `/containers/${id}/json`);
        if (r.status === 404) break;
        if (r.json.State.Running) stop = host.api('POST', `/containers/${id}/stop?t=1`, undefined, {}, { timeoutMs: 15_000 });
      }
      assert.equal((await started).status, 204);
      assert.equal((await removed).status, 204);
      if (stop) assert.ok([204, 304, 404].includes((await stop).status), `round ${round}: the stop answered`);
      assert.equal((await host.api('GET', `/containers/${id}/json`)).status, 404);
    }
  });

  it('a removal without force whose container a queued start made run is refused, and the container keeps running', async () => {
    const { id, started, removed } = await startThenRemove(false);
    assert.equal((await started).status, 204);
    const r = await removed;
    assert.equal(r.status, 409, r.body);
    assert.match(r.json.message, new RegExp(`^You cannot remove a running container ${id}\\. Stop the container before attempting removal or force remove$`));
    const c = await host.api('GET', `/containers/${id}/json`);
    assert.equal(c.status, 200);
    assert.equal(c.json.State.Running, true);
    assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
  });
});
