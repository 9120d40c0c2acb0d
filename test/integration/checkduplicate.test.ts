import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestHost } from './harness.js';

/**
 * `CheckDuplicate` (API <= 1.43): only `true` refuses a second network of the same name; false or
 * absent (docker-py's default, compose's too) creates one more, with a warning, as Docker 20.10
 * does. Names then resolve only by id; by name they are ambiguous. Docker's answers below were
 * measured against Debian's dockerd 20.10.24 (test/integration/differential-docker.test.ts).
 */
describe('network create with CheckDuplicate false makes a second network of the same name', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  it('refuses only with CheckDuplicate true, warns otherwise, and then answers by id only', async () => {
    const first = await host.api('POST', '/networks/create', { Name: 'dup', CheckDuplicate: true });
    assert.equal(first.status, 201, first.body);
    assert.equal(first.json.Warning, '');
    const refused = await host.api('POST', '/networks/create', { Name: 'dup', CheckDuplicate: true });
    assert.equal(refused.status, 409);
    assert.equal(refused.json.message, 'network with name dup already exists');

    const second = await host.api('POST', '/networks/create', { Name: 'dup', CheckDuplicate: false });
    assert.equal(second.status, 201, second.body);
    assert.notEqual(second.json.Id, first.json.Id);
    assert.equal(second.json.Warning, `Network with name dup (id : ${first.json.Id}) already exists`);
    const third = await host.api('POST', '/networks/create', { Name: 'dup' });
    assert.equal(third.status, 201, third.body);

    const ids = [first.json.Id, second.json.Id, third.json.Id] as string[];
    const list = await host.api('GET', '/networks?filters={"name":["dup"]}');
    assert.deepEqual(list.json.map((n: { Id: string }) => n.Id).sort(), [...ids].sort());
    const subnets = list.json.map((n: { IPAM: { Config: Array<{ Subnet: string }> } }) => n.IPAM.Config[0]!.Subnet);
    assert.equal(new Set(subnets).size, 3, `each has its own subnet: ${subnets}`);

    const byName = await host.api('GET', '/networks/dup');
    assert.equal(byName.status, 400);
    assert.equal(byName.json.message, '3 matches found based on name: network dup is ambiguous');
    const rmByName = await host.api('DELETE', '/networks/dup');
    assert.equal(rmByName.status, 400);
    assert.equal(rmByName.json.message, 'network dup is ambiguous (3 matches found based on name)');

    // Each works by id: a container joins the second one and gets an address of its subnet.
    const secondNet = list.json.find((n: { Id: string }) => n.Id === second.json.Id);
    const c = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: second.json.Id } });
    const ci = await host.api('GET', `/containers/${c}/json`);
    const eps = Object.values(ci.json.NetworkSettings.Networks) as Array<{ NetworkID: string; IPAddress: string }>;
    assert.equal(eps.length, 1);
    assert.equal(eps[0]!.NetworkID, second.json.Id);
    const prefix = secondNet.IPAM.Config[0].Subnet.split('.').slice(0, 2).join('.');
    assert.ok(eps[0]!.IPAddress.startsWith(`${prefix}.`), `${eps[0]!.IPAddress} in ${secondNet.IPAM.Config[0].Subnet}`);
    assert.equal((await host.api('DELETE', `/containers/${c}?force=1`)).status, 204);

    for (const id of ids) assert.equal((await host.api('DELETE', `/networks/${id}`)).status, 204);
    assert.equal((await host.api('GET', '/networks/dup')).status, 404);
  });
});
