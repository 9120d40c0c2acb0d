import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { checkInvariants } from '../chaos/invariants.js';
import { TestHost, waitFor } from './harness.js';

/**
 * A conmon that never reports its container (npm run chaos, seed 20261205, cycle 51: a runc create
 * killed at an unlucky moment left the start waiting forever, holding the container's lock). The
 * wait is bounded (BERTH_CREATE_BOUND_MS, 60 s by default); here it is 1 ms, so every create
 * "hangs" and the failure path must give everything back.
 */
describe('a create that conmon never reports is bounded', () => {
  let host: TestHost;
  before(async () => {
    process.env.BERTH_CREATE_BOUND_MS = '1';
    try {
      host = await TestHost.create();
    } finally {
      delete process.env.BERTH_CREATE_BOUND_MS;
    }
    assert.equal((await host.api('POST', '/networks/create', { Name: 'cb', IPAM: { Config: [{ Subnet: '10.87.0.0/24' }] } })).status, 201);
  });
  after(async () => {
    assert.deepEqual(await host.destroy(), []);
  });

  it('fails the start with a 500 naming the bound, and leaves nothing held', async () => {
    const c = await host.api('POST', '/containers/create?name=cb1', { Image: 'busybox', Cmd: ['sleep', '300'], ExposedPorts: { '80/tcp': {} }, HostConfig: { NetworkMode: 'cb', PortBindings: { '80/tcp': [{ HostPort: '24000' }] } } });
    assert.equal(c.status, 201);
    const s = await host.api('POST', `/containers/${c.json.Id}/start`, undefined, {}, { timeoutMs: 30_000 });
    assert.equal(s.status, 500, s.body);
    assert.match(s.json.message, /conmon did not report the container within/);
    // The runc create that conmon had started may finish on its own: give it a moment, then the
    // store and the kernel must agree (nothing running, nothing held).
    await waitFor(async () => (await host.api('GET', `/containers/${c.json.Id}/json`)).json.State.Running === false, 'not running');
    await new Promise((r) => setTimeout(r, 1500));
    await checkInvariants(host, { knownIds: [c.json.Id] });
    assert.equal((await host.api('DELETE', `/containers/${c.json.Id}?force=1`, undefined, {}, { timeoutMs: 30_000 })).status, 204);
    await checkInvariants(host, { knownIds: [c.json.Id] });
  });
});
