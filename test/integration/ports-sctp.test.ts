import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestHost } from './harness.js';

/**
 * `-p HOST:CONTAINER/sctp`: published through the same kernel NAT as tcp and udp. This machine's
 * kernel has no SCTP (a socket of that protocol is refused), so what is checked is what berth
 * writes and answers: the NAT element, Docker's inspect and port shapes, the refusal of a random
 * host port, and that nothing is left after rm.
 */
describe('publishing an SCTP port', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => { assert.deepEqual(await host.destroy(), []); });

  const pubAny = async () => (await host.inNetns('nft', ['list', 'map', 'ip', 'berth', 'pub_any'])).stdout;

  it('-p 9932:32/sctp: a NAT element for sctp, and Docker\'s Ports shape in inspect and /json', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], ExposedPorts: { '32/sctp': {} }, HostConfig: { PortBindings: { '32/sctp': [{ HostPort: '9932' }] } } }, 'sctp1');
    const insp = (await host.api('GET', `/containers/${id}/json`)).json;
    const ip = insp.NetworkSettings.Networks.bridge.IPAddress as string;
    assert.deepEqual(insp.NetworkSettings.Ports['32/sctp'], [{ HostIp: '0.0.0.0', HostPort: '9932' }]);
    assert.match(await pubAny(), new RegExp(`sctp \\. 9932 (?:counter packets \\d+ bytes \\d+ )?: ${ip.replace(/\./g, '\\.')} \\. 32`));
    const listed = (await host.api('GET', '/containers/json')).json.find((c: { Id: string }) => c.Id === id);
    assert.deepEqual(listed.Ports, [{ IP: '0.0.0.0', PrivatePort: 32, PublicPort: 9932, Type: 'sctp' }]);
    assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
    assert.doesNotMatch(await pubAny(), /sctp \. 9932/);
  });

  it('an SCTP port without a host port is refused with a message, and nothing is left', async () => {
    const c = await host.api('POST', '/containers/create?name=sctp2', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { PortBindings: { '33/sctp': [{ HostPort: '' }] } } });
    assert.equal(c.status, 201, c.body);
    const s = await host.api('POST', '/containers/sctp2/start');
    assert.ok(s.status >= 400 && s.status < 600, s.body);
    assert.match(String(s.json?.message), /SCTP port needs an explicit host port/);
    assert.equal((await host.api('GET', '/containers/sctp2/json')).json.State.Running, false);
    assert.doesNotMatch(await pubAny(), /sctp/);
    assert.equal((await host.api('DELETE', '/containers/sctp2?force=1')).status, 204);
  });
});
