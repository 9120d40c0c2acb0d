import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestHost } from './harness.js';

/**
 * What Docker 20.10 accepts and records that berth refuses today, where the fix belongs in the
 * network controller or the engine (src/network/controller.ts, src/engine/engine.ts), not the API
 * layer (issue 23). Docker's answers were measured against Debian's dockerd 20.10.24. The API-layer cases are in api-semantics.test.ts.
 */
describe('Docker 20.10 semantics that need the network controller or the engine', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  async function created(body: Record<string, unknown>): Promise<any> {
    const r = await host.api('POST', '/networks/create', { CheckDuplicate: true, ...body });
    assert.equal(r.status, 201, `${JSON.stringify(body)}: ${r.body}`);
    const n = await host.api('GET', `/networks/${r.json.Id}`);
    assert.equal(n.status, 200);
    return n.json;
  }

  it('accepts a network name with a space (libnetwork only refuses a blank one)', async () => {
    const n = await created({ Name: 'my net' });
    assert.equal(n.Name, 'my net');
    assert.equal((await host.api('GET', '/networks/my%20net')).json.Id, n.Id);
    assert.equal((await host.api('DELETE', '/networks/my%20net')).status, 204);
  });

  it('records an IPv6 subnet given without EnableIPv6, and allocates IPv4 only', async () => {
    const n = await created({ Name: 'v6off', IPAM: { Config: [{ Subnet: '172.29.0.0/16' }, { Subnet: 'fd00:5::/64' }] } });
    assert.equal(n.EnableIPv6, false);
    assert.deepEqual(n.IPAM.Config.map((c: { Subnet: string }) => c.Subnet), ['172.29.0.0/16', 'fd00:5::/64']);
    const id = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'v6off' } });
    const ep = (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.v6off;
    assert.ok(ep.IPAddress.startsWith('172.29.'), ep.IPAddress);
    assert.equal(ep.GlobalIPv6Address, '');
    assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
    assert.equal((await host.api('DELETE', '/networks/v6off')).status, 204);
  });

  it('accepts subnets with host bits set and records them as given (IPv4 and IPv6)', async () => {
    const n4 = await created({ Name: 'hb4', IPAM: { Config: [{ Subnet: '172.28.5.5/16' }] } });
    assert.equal(n4.IPAM.Config[0].Subnet, '172.28.5.5/16');
    const n6 = await created({ Name: 'hb6', EnableIPv6: true, IPAM: { Config: [{ Subnet: 'fd00:6::5/64' }] } });
    assert.ok(n6.IPAM.Config.some((c: { Subnet: string }) => c.Subnet === 'fd00:6::5/64'), JSON.stringify(n6.IPAM.Config));
    const id = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'hb6' } });
    const ep = (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.hb6;
    assert.ok(ep.GlobalIPv6Address.startsWith('fd00:6::'), ep.GlobalIPv6Address);
    assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
    for (const name of ['hb4', 'hb6']) assert.equal((await host.api('DELETE', `/networks/${name}`)).status, 204);
  });

  it('names a missing image with its tag in container create\'s 404', async () => {
    const r = await host.api('POST', '/containers/create', { Image: 'nosuchimage' });
    assert.equal(r.status, 404);
    assert.equal(r.json.message, 'No such image: nosuchimage:latest');
  });
});
