import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { checkInvariants } from '../chaos/invariants.js';
import { TestHost, type ApiResponse } from './harness.js';

/**
 * Issue 22's races: one name, network, container, published host port or static address raced from
 * many clients at once. Exactly one wins, the others get Docker's error (status and wording), no
 * call hangs (each is bounded) and no address is held twice.
 */
const CLIENTS = 12;
const BOUND = 30_000;

describe(`races between ${CLIENTS} clients`, () => {
  let host: TestHost;

  before(async () => {
    host = await TestHost.create();
    assert.equal((await host.api('POST', '/networks/create', { Name: 'rnet', CheckDuplicate: true, IPAM: { Config: [{ Subnet: '10.81.0.0/24' }] } })).status, 201);
  });

  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  const api = (method: string, path: string, body?: unknown) => host.api(method, path, body, {}, { timeoutMs: BOUND });
  const race = (f: (i: number) => Promise<ApiResponse>) => Promise.all(Array.from({ length: CLIENTS }, (_, i) => f(i)));
  /** Exactly one answer has `win`; every other has `lose` and a message matching `msg`. */
  function oneWinner(rs: ApiResponse[], win: number, lose: number, msg: RegExp): ApiResponse {
    const summary = rs.map((r) => `${r.status} ${r.json?.message ?? ''}`).join('\n');
    const winners = rs.filter((r) => r.status === win);
    assert.equal(winners.length, 1, `one ${win}, got:\n${summary}`);
    for (const r of rs.filter((x) => x !== winners[0])) {
      assert.equal(r.status, lose, summary);
      assert.match(String(r.json?.message), msg, summary);
    }
    return winners[0]!;
  }
  async function createMany(prefix: string, body: Record<string, unknown>): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < CLIENTS; i++) {
      const c = await api('POST', `/containers/create?name=${prefix}${i}`, { Image: 'busybox', Cmd: ['sleep', '300'], ...body });
      assert.equal(c.status, 201, c.body);
      ids.push(c.json.Id);
    }
    return ids;
  }
  async function removeAll(ids: string[]): Promise<void> {
    for (const id of ids) assert.ok([204, 404].includes((await api('DELETE', `/containers/${id}?force=1`)).status));
  }

  it('one container name: one 201, the others 409 "Conflict. The container name … is already in use"', async () => {
    const rs = await race(() => api('POST', '/containers/create?name=samename', { Image: 'busybox', Cmd: ['sleep', '300'] }));
    const w = oneWinner(rs, 201, 409, /^Conflict\. The container name "\/samename" is already in use by container "[0-9a-f]{64}"/);
    await removeAll([w.json.Id]);
  });

  it('one network name (CheckDuplicate): one 201, the others 409 "network with name … already exists"', async () => {
    const rs = await race(() => api('POST', '/networks/create', { Name: 'samenet', CheckDuplicate: true }));
    oneWinner(rs, 201, 409, /^network with name samenet already exists$/);
    assert.equal((await api('DELETE', '/networks/samenet')).status, 204);
    await checkInvariants(host);
  });

  it('one published host port: one start wins, the others are refused as Docker refuses ("port is already allocated")', async () => {
    const ids = await createMany('port', { ExposedPorts: { '80/tcp': {} }, HostConfig: { PortBindings: { '80/tcp': [{ HostPort: '23000' }] } } });
    const rs = await race((i) => api('POST', `/containers/${ids[i]}/start`));
    oneWinner(rs, 204, 500, /Bind for 0\.0\.0\.0:23000 failed: port is already allocated/);
    await checkInvariants(host);
    await removeAll(ids);
  });

  it('one static address: one start wins, the others 403 "Address already in use" (Docker status and wording)', async () => {
    const ids = await createMany('ip', { HostConfig: { NetworkMode: 'rnet' }, NetworkingConfig: { EndpointsConfig: { rnet: { IPAMConfig: { IPv4Address: '10.81.0.50' } } } } });
    const rs = await race((i) => api('POST', `/containers/${ids[i]}/start`));
    // libnetwork's ErrIPAlreadyAllocated is a ForbiddenError: Docker answers 403.
    oneWinner(rs, 204, 403, /^Address already in use$/);
    await checkInvariants(host);
    await removeAll(ids);
  });

  it('one container removed by every client: one 204, the others 404 or 409 (removal in progress), nothing left', async () => {
    const c = await api('POST', '/containers/create?name=victim', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'rnet' } });
    assert.equal((await api('POST', `/containers/${c.json.Id}/start`)).status, 204);
    const rs = await race(() => api('DELETE', `/containers/${c.json.Id}?force=1`));
    const summary = rs.map((r) => `${r.status} ${r.json?.message ?? ''}`).join('\n');
    assert.equal(rs.filter((r) => r.status === 204).length, 1, summary);
    for (const r of rs.filter((x) => x.status !== 204)) {
      assert.ok((r.status === 404 && /No such container/.test(r.json?.message)) || (r.status === 409 && /removal of container .* is already in progress/.test(r.json?.message)), summary);
    }
    await checkInvariants(host);
  });

  it('one network removed by every client: one 204, the others 404 "network … not found", nothing left', async () => {
    assert.equal((await api('POST', '/networks/create', { Name: 'rmrace' })).status, 201);
    const rs = await race(() => api('DELETE', '/networks/rmrace'));
    oneWinner(rs, 204, 404, /^network rmrace not found$/);
    assert.equal((await api('GET', '/networks/rmrace')).status, 404);
    await checkInvariants(host);
  });

  it('one container connected to one network by every client: one 200, the others 403 "endpoint … already exists"', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'] }, 'joiner');
    const rs = await race(() => api('POST', '/networks/rnet/connect', { Container: id }));
    oneWinner(rs, 200, 403, /endpoint with name joiner already exists in network rnet/);
    await checkInvariants(host);
    await removeAll([id]);
  });

  // Found by chaos.test (seed 859898): two creates at once took the same free subnet; a kill of
  // berthd then left two records claiming it, and no later start could load the firewall.
  it('networks created at once without a subnet each get their own', async () => {
    const rs = await race((i) => api('POST', '/networks/create', { Name: `auto${i}` }));
    for (const r of rs) assert.equal(r.status, 201, r.body);
    const subnets = await Promise.all(rs.map(async (r) => (await api('GET', `/networks/${r.json.Id}`)).json.IPAM.Config[0].Subnet as string));
    assert.equal(new Set(subnets).size, CLIENTS, subnets.join(' '));
    await checkInvariants(host);
    for (const r of rs) assert.equal((await api('DELETE', `/networks/${r.json.Id}`)).status, 204);
  });

  // Found by npm run chaos (seed 20261205): a rm that took the bridge from under a connect made the
  // connect answer 500 "Device does not exist". Either the join is first (rm: 403, active
  // endpoints) or the rm is (connect: 404); never a 500, never a half-joined container.
  it('a network removed while containers connect to it: 403 "active endpoints" or 404, never a 5xx', async () => {
    const ids = await Promise.all(Array.from({ length: 4 }, (_, i) => host.runDetached({ Cmd: ['sleep', '300'] }, `rmrace${i}`)));
    for (let round = 0; round < 6; round++) {
      assert.equal((await api('POST', '/networks/create', { Name: `gone${round}` })).status, 201);
      const [rm, ...connects] = await Promise.all([
        new Promise<ApiResponse>((resolve) => setTimeout(() => resolve(api('DELETE', `/networks/gone${round}`)), round * 3)),
        ...ids.map((id) => api('POST', `/networks/gone${round}/connect`, { Container: id })),
      ]);
      const summary = [rm!, ...connects].map((r) => `${r.status} ${r.json?.message ?? ''}`).join('\n');
      for (const r of [rm!, ...connects]) assert.ok(r.status < 500, summary);
      if (rm!.status === 204) {
        assert.ok(connects.every((r) => r.status === 404 || r.status === 200), summary);
      } else {
        assert.equal(rm!.status, 403, summary);
        assert.match(String(rm!.json?.message), /has active endpoints/, summary);
      }
      for (const id of ids) {
        const nets = (await api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks as Record<string, unknown>;
        if (nets[`gone${round}`]) assert.equal((await api('POST', `/networks/gone${round}/disconnect`, { Container: id })).status, 200);
      }
      const left = await api('DELETE', `/networks/gone${round}`);
      assert.ok(left.status === 204 || left.status === 404, `${left.status} ${left.body}`);
      await checkInvariants(host);
    }
    await removeAll(ids);
  });
});
