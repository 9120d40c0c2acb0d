import assert from 'node:assert/strict';
import { request } from 'node:http';
import { promises as fs } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { TestHost } from './harness.js';

/**
 * Docker 20.10's answers at API v1.41 for what clients send wrong, and for the swarm endpoints of
 * a node outside a swarm (issue 23; issue 22 item 10). Every refusal is checked for its status
 * and words, and next to each a valid request proves the route itself works.
 */
describe('API semantics: Docker 20.10 validation, swarm-inactive answers, bounded bodies', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  const NO_MANAGER = 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.';

  async function expect(method: string, path: string, body: unknown, status: number, message: string | RegExp): Promise<void> {
    const r = await host.api(method, path, body);
    assert.equal(r.status, status, `${method} ${path}: ${r.body}`);
    if (typeof message === 'string') assert.equal(r.json?.message, message, `${method} ${path}`);
    else assert.match(r.json?.message ?? '', message, `${method} ${path}`);
  }

  it('answers every swarm endpoint as a Docker node outside a swarm', async () => {
    await expect('POST', '/swarm/leave', undefined, 503, 'This node is not part of a swarm');
    await expect('POST', '/v1.41/swarm/leave?force=1', undefined, 503, 'This node is not part of a swarm');
    for (const p of ['/swarm', '/swarm/unlockkey', '/nodes', '/nodes/x', '/services', '/services/x', '/tasks', '/tasks/x', '/secrets', '/secrets/x', '/configs', '/configs/x']) {
      await expect('GET', p, undefined, 503, NO_MANAGER);
    }
    for (const p of ['/nodes/x', '/services/x', '/secrets/x', '/configs/x']) await expect('DELETE', p, undefined, 503, NO_MANAGER);
    for (const p of ['/services/create', '/secrets/create', '/configs/create', '/swarm/unlock']) {
      await expect('POST', p, {}, 503, NO_MANAGER);
      // Docker decodes the body before it asks the cluster.
      await expect('POST', p, undefined, 400, 'got EOF while reading request body');
    }
    await expect('POST', '/swarm/update?version=3', {}, 503, NO_MANAGER);
    await expect('POST', '/swarm/update', {}, 400, `invalid swarm version '': strconv.ParseUint: parsing "": invalid syntax`);
    await expect('POST', '/services/x/update?version=abc', {}, 400, /^invalid service version 'abc'/);
    await expect('POST', '/nodes/x/update?version=1', {}, 503, NO_MANAGER);
    await expect('POST', '/secrets/x/update', {}, 400, 'invalid secret version');
    await expect('GET', '/services/x/logs?stdout=1', undefined, 503, NO_MANAGER);
    await expect('GET', '/tasks/x/logs', undefined, 400, 'Bad parameters: you must choose at least one stream');
    await expect('GET', '/services?filters=notjson', undefined, 400, /invalid filter/);
    // A host whose only links are loopback and berth's own has no address to advertise: Docker's
    // words, and no swarm half-made.
    await expect('POST', '/swarm/init', { ListenAddr: '0.0.0.0:2377' }, 503, "could not find the system's IP address - specify one with --advertise-addr");
    await expect('POST', '/swarm/join', { JoinToken: 'x', RemoteAddrs: [] }, 400, 'at least 1 RemoteAddr is required to join');
    const info = await host.api('GET', '/info');
    assert.equal(info.json.Swarm.LocalNodeState, 'inactive');
    const plugins = await host.api('GET', '/plugins');
    assert.equal(plugins.status, 200);
    assert.deepEqual(plugins.json, []);
  });

  it('refuses bad network create bodies with Docker\'s words, and creates the valid one', async () => {
    const create = (body: Record<string, unknown>) => ({ Name: 'semnet', ...body });
    await expect('POST', '/networks/create', create({ IPAM: { Config: 'x' } }), 400,
      'json: cannot unmarshal string into Go struct field IPAM.IPAM.Config of type []network.IPAMConfig');
    await expect('POST', '/networks/create', create({ Internal: 'yes' }), 400,
      'json: cannot unmarshal string into Go struct field NetworkCreateRequest.Internal of type bool');
    await expect('POST', '/networks/create', create({ IPAM: { Config: [{ Subnet: 'x' }] } }), 400, 'Invalid subnet x : invalid CIDR address: x');
    await expect('POST', '/networks/create', create({ IPAM: { Config: [{ Gateway: '172.30.0.1' }] } }), 400, 'Invalid subnet  : invalid CIDR address: ');
    await expect('POST', '/networks/create', create({ IPAM: { Config: [{ Subnet: '172.30.0.0/16', Gateway: 'nope' }] } }), 400,
      'invalid gateway address nope in Ipam configuration');
    await expect('POST', '/networks/create', create({ IPAM: { Config: [{ Subnet: '172.30.0.0/16', Gateway: '172.30.0.0' }] } }), 400,
      'failed to allocate gateway (172.30.0.0): Address already in use');
    await expect('POST', '/networks/create', create({ IPAM: { Config: [{ Subnet: '172.30.0.0/16', Gateway: '172.30.255.255' }] } }), 400,
      'failed to allocate gateway (172.30.255.255): Address already in use');
    await expect('POST', '/networks/create', create({ IPAM: { Config: [{ Subnet: '172.30.0.0/16', Gateway: '172.31.0.1' }] } }), 400,
      'failed to allocate gateway (172.31.0.1): Requested address is out of range');
    await expect('POST', '/networks/create', create({ IPAM: { Config: [{ Subnet: '127.0.0.0/8' }] } }), 400, /loopback addresses cannot be used/);
    await expect('POST', '/networks/create', create({ IPAM: { Config: [{ Subnet: '224.1.0.0/16' }] } }), 400, /multicast/);
    await expect('POST', '/networks/create', create({ Options: { 'com.docker.network.bridge.name': 'br semnet' } }), 400,
      /invalid bridge name "br semnet".*white space/);
    await expect('POST', '/networks/create', create({ Options: { 'com.docker.network.bridge.name': 'a-very-long-bridge-name' } }), 400,
      /longer than 15 bytes/);
    await expect('POST', '/networks/create', { Name: '   ' }, 400, 'invalid name:    ');
    // Nothing of the refused ones was made.
    const none = await host.api('GET', '/networks?filters={"name":["semnet"]}');
    assert.deepEqual(none.json, []);
    const ok = await host.api('POST', '/networks/create', create({
      IPAM: { Config: [{ Subnet: '172.30.0.0/16', Gateway: '172.30.0.254' }] }, Options: { 'com.docker.network.bridge.name': 'br-semnet' },
    }));
    assert.equal(ok.status, 201, ok.body);
    const n = await host.api('GET', `/networks/${ok.json.Id}`);
    assert.equal(n.json.IPAM.Config[0].Gateway, '172.30.0.254');
    const rm = await host.api('DELETE', `/networks/${ok.json.Id}`);
    assert.equal(rm.status, 204);
  });

  it('refuses container bodies Docker refuses (Go types, memory, port specs), and creates the valid one', async () => {
    await expect('POST', '/containers/create', { Image: 'busybox', HostConfig: { Memory: -1 } }, 400, 'Minimum memory limit allowed is 6MB');
    await expect('POST', '/containers/create', { Image: 'busybox', HostConfig: { Memory: 1e30 } }, 400,
      /^json: cannot unmarshal number 1e\+?30 into Go struct field HostConfig.HostConfig.Memory of type int64$/);
    await expect('POST', '/containers/create', { Image: 'busybox', HostConfig: { PortBindings: { '80/tcp': 'x' } } }, 400,
      'json: cannot unmarshal string into Go struct field HostConfig.HostConfig.PortBindings of type []nat.PortBinding');
    await expect('POST', '/containers/create', { Image: 'busybox', HostConfig: { PortBindings: { '80/tcp': [{ HostPort: 'x' }] } } }, 400,
      'invalid port specification: "x"');
    await expect('POST', '/containers/create', { Image: 'busybox', HostConfig: { PortBindings: { '99999/tcp': [] } } }, 400,
      'invalid port specification: "99999"');
    await expect('POST', '/containers/create', { Image: 'busybox', Env: 'A=1' }, 400,
      'json: cannot unmarshal string into Go struct field ContainerConfigWrapper.Env of type []string');
    await expect('POST', '/containers/create', { Image: 'busybox', HostConfig: { MemoryReservation: 1024 } }, 400, 'Minimum memory reservation allowed is 6MB');
    const list = await host.api('GET', '/containers/json?all=1');
    assert.deepEqual(list.json, []);
    const ok = await host.api('POST', '/containers/create', {
      Image: 'busybox', Cmd: ['true'], HostConfig: { Memory: 64 << 20, PortBindings: { '80/tcp': [{ HostPort: '8080' }] } },
    });
    assert.equal(ok.status, 201, ok.body);
    const up = await host.api('POST', `/containers/${ok.json.Id}/update`, { Memory: '1g' });
    assert.equal(up.status, 400);
    assert.equal(up.json.message, 'json: cannot unmarshal string into Go struct field UpdateConfig.Memory of type int64');
    const ex = await host.api('POST', `/containers/${ok.json.Id}/exec`, { Cmd: 'ls' });
    assert.equal(ex.status, 400);
    assert.equal(ex.json.message, 'json: cannot unmarshal string into Go struct field ExecConfig.Cmd of type []string');
    assert.equal((await host.api('DELETE', `/containers/${ok.json.Id}?force=1`)).status, 204);
  });

  it('answers a SIGKILL only once the container stopped, so a removal without force follows at once', async () => {
    for (const signal of ['', 'SIGKILL', '9']) {
      const id = await host.runDetached({ Cmd: ['sleep', '300'] });
      const k = await host.api('POST', `/containers/${id}/kill${signal ? `?signal=${signal}` : ''}`);
      assert.equal(k.status, 204, k.body);
      const rm = await host.api('DELETE', `/containers/${id}`);
      assert.equal(rm.status, 204, `kill ${signal || '(default)'} then rm: ${rm.body}`);
    }
  });

  it('refuses a start with a HostConfig body as Docker 1.24+ does, and takes an empty object or none', async () => {
    const created = await host.api('POST', '/containers/create?name=startbody', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'none' } });
    assert.equal(created.status, 201, created.body);
    const refused = await host.api('POST', '/containers/startbody/start', { Privileged: true });
    assert.equal(refused.status, 400, refused.body);
    assert.equal(refused.json.message, 'starting container with non-empty request body was deprecated since API v1.22 and removed in v1.24');
    assert.equal((await host.api('GET', '/containers/startbody/json')).json.State.Status, 'created');
    // Before 1.24 such a body was accepted (its HostConfig, which berth never applied, is ignored here).
    assert.equal((await host.api('POST', '/v1.23/containers/startbody/start', { Privileged: true })).status, 204);
    assert.equal((await host.api('POST', '/containers/startbody/stop?t=0')).status, 204);
    assert.equal((await host.api('POST', '/containers/startbody/start', {})).status, 204);
    assert.equal((await host.api('DELETE', '/containers/startbody?force=1')).status, 204);
  });

  it('answers top with ps arguments ps refuses, or without a PID column, with a 400 naming it', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'none' } });
    const ok = await host.api('GET', `/containers/${id}/top?ps_args=-ef`);
    assert.equal(ok.status, 200, ok.body);
    assert.ok(ok.json.Processes.some((p: string[]) => p.join(' ').includes('sleep 300')), ok.body);
    const bad = await host.api('GET', `/containers/${id}/top?ps_args=${encodeURIComponent('{"x":')}`);
    assert.equal(bad.status, 400, bad.body);
    assert.match(bad.json.message, /^Error running ps: /);
    const noPid = await host.api('GET', `/containers/${id}/top?ps_args=${encodeURIComponent('-o comm')}`);
    assert.equal(noPid.status, 400, noPid.body);
    assert.equal(noPid.json.message, "Couldn't find PID field in ps output");
    assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
  });

  it('refuses volume names Docker cannot make, and makes a valid one', async () => {
    await expect('POST', '/volumes/create', { Name: 'v'.repeat(10_000) }, 400, /^create v{64}\.\.\.: volume name is too long \(10000 bytes\)/);
    await expect('POST', '/volumes/create', { Name: 'v' }, 400, 'create v: volume name is too short, names should be at least two alphanumeric characters');
    await expect('POST', '/volumes/create', { Name: 'a b' }, 400, /"a b" includes invalid characters for a local volume name/);
    await expect('POST', '/volumes/create', { Labels: ['x'] }, 400,
      'json: cannot unmarshal array into Go struct field VolumeCreateBody.Labels of type map[string]string');
    await expect('POST', '/containers/create', { Image: 'busybox', HostConfig: { Binds: [`${'w'.repeat(300)}:/data`] } }, 400, /volume name is too long/);
    const ok = await host.api('POST', '/volumes/create', { Name: 'v'.repeat(255) });
    assert.equal(ok.status, 201, ok.body);
    assert.equal((await host.api('DELETE', `/volumes/${'v'.repeat(255)}`)).status, 204);
  });

  /** berthd's resident memory in kB. */
  async function rss(): Promise<number> {
    const status = await fs.readFile(`/proc/${host.daemonPid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
  }

  /** Sends `total` bytes of `chunk` repeated, chunked (no length) or with Content-Length. */
  function send(path: string, total: number, opts: { declare: boolean; type: string }): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: host.socket, method: 'POST', path,
        headers: { 'Content-Type': opts.type, ...(opts.declare ? { 'Content-Length': String(total) } : {}) },
      }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => { body += d.toString(); });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      // berthd may close the connection once it has answered; that is the point.
      req.on('error', (e) => { if (!(e as NodeJS.ErrnoException).code?.startsWith('EPIPE') && (e as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(e); });
      const chunk = Buffer.alloc(1 << 20, 0x20);
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          sent += chunk.length;
          if (!req.write(chunk)) { req.once('drain', pump); return; }
        }
        req.end();
      };
      pump();
    });
  }

  it('bounds JSON bodies (413, before reading them) and streams archives, so 100 MB bodies leave RSS flat', async () => {
    const before = await rss();
    for (const declare of [true, false]) {
      const r = await send('/containers/create', 100 << 20, { declare, type: 'application/json' });
      assert.equal(r.status, 413, r.body);
      assert.match(JSON.parse(r.body).message, /request body too large.*a JSON body can be at most 4194304 bytes/);
    }
    // A 100 MB upload that is not a valid archive: spooled to disk, refused, nothing kept in memory.
    const load = await send('/images/load', 100 << 20, { declare: true, type: 'application/x-tar' });
    // load answers with a progress stream (200), where the refusal is the errorDetail.
    assert.equal(load.status, 200);
    assert.match(JSON.parse(load.body).errorDetail.message, /^invalid image archive/);
    const after = await rss();
    assert.ok(after - before < 40_000, `berthd RSS grew from ${before} kB to ${after} kB`);
    // And the daemon still answers on a fresh connection.
    assert.equal((await host.api('GET', '/_ping')).status, 200);
  });
});
