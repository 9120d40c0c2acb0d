import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { backoffMs, PluginClient, PluginStatusError, PluginUnreachableError, PLUGIN_MIME } from '../../src/plugins/client.js';
import { BadSpecError, findPlugin, parseAddr } from '../../src/plugins/discovery.js';
import { PluginManager } from '../../src/plugins/manager.js';

let dir: string;
before(async () => { dir = await fs.mkdtemp(join(tmpdir(), 'berth-plugins-unit-')); });
after(async () => { await fs.rm(dir, { recursive: true, force: true }); });

function listen(path: string, handler: (method: string, body: string, headers: Record<string, unknown>) => [number, unknown] | 'drop'): Promise<Server> {
  const s = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      const a = handler((req.url ?? '').slice(1), body, req.headers);
      if (a === 'drop') return void req.socket.destroy();
      res.writeHead(a[0], { 'Content-Type': PLUGIN_MIME });
      res.end(typeof a[1] === 'string' ? a[1] : JSON.stringify(a[1]));
    });
  });
  return new Promise((r) => s.listen(path, () => r(s)));
}

describe('plugin discovery (Docker\'s places and order)', () => {
  it('finds NAME.sock and NAME/NAME.sock, then NAME.spec and NAME.json in each spec directory', async () => {
    const sockets = join(dir, 'run');
    const etc = join(dir, 'etc');
    const lib = join(dir, 'lib');
    await fs.mkdir(join(sockets, 'nested'), { recursive: true });
    await fs.mkdir(join(lib, 'viajson'), { recursive: true });
    await fs.mkdir(etc, { recursive: true });
    const paths = { sockets, specs: [etc, lib] };
    const s1 = await listen(join(sockets, 'flat.sock'), () => [200, {}]);
    const s2 = await listen(join(sockets, 'nested', 'nested.sock'), () => [200, {}]);
    try {
      await fs.writeFile(join(etc, 'viaspec.spec'), 'unix:///somewhere/p.sock\n');
      await fs.writeFile(join(lib, 'viajson', 'viajson.json'), JSON.stringify({ Name: 'viajson', Addr: 'tcp://127.0.0.1:9999' }));
      // A socket wins over a spec of the same name; a plain file named .sock is no socket.
      await fs.writeFile(join(etc, 'flat.spec'), 'unix:///not/this.sock');
      await fs.writeFile(join(sockets, 'fake.sock'), '');
      assert.deepEqual((await findPlugin('flat', paths))?.addr, { unix: join(sockets, 'flat.sock') });
      assert.deepEqual((await findPlugin('nested', paths))?.addr, { unix: join(sockets, 'nested', 'nested.sock') });
      assert.deepEqual((await findPlugin('viaspec', paths))?.addr, { unix: '/somewhere/p.sock' });
      assert.deepEqual((await findPlugin('viajson', paths))?.addr, { tcp: { host: '127.0.0.1', port: 9999 } });
      assert.equal(await findPlugin('fake', paths), undefined);
      assert.equal(await findPlugin('nowhere', paths), undefined);
      // A name is never a path out of the directories.
      assert.equal(await findPlugin('../etc/viaspec', paths), undefined);
    } finally {
      s1.close();
      s2.close();
    }
  });

  it('refuses spec files that name no usable address', () => {
    assert.throws(() => parseAddr('/no/scheme.sock', 'x.spec'), BadSpecError);
    assert.throws(() => parseAddr('https://h:1', 'x.spec'), BadSpecError);
    assert.throws(() => parseAddr('tcp://h', 'x.spec'), BadSpecError);
    assert.deepEqual(parseAddr('http://[::1]:80', 'x.spec'), { tcp: { host: '::1', port: 80 } });
  });
});

describe('plugin client (Docker\'s protocol and retries)', () => {
  it('backs off 1 s, 2 s, 4 s … up to 30 s', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(backoffMs), [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  });

  it('POSTs JSON with the plugin media type; an Err answer is Method: Err with its status; 200 is the answer', async () => {
    const sock = join(dir, 'c1.sock');
    const seen: Array<{ method: string; body: string; accept: unknown }> = [];
    const s = await listen(sock, (method, body, h) => {
      seen.push({ method, body, accept: h.accept });
      if (method === 'Bad.Call') return [500, { Err: 'it broke' }];
      if (method === 'Plain.Error') return [404, '404 page not found\n'];
      return [200, { Echo: JSON.parse(body || 'null') }];
    });
    try {
      const c = new PluginClient('p', { retryMs: 1000, callTimeoutMs: 1000, resolve: async () => ({ unix: sock }) });
      assert.deepEqual(await c.call('Good.Call', { A: 1 }), { Echo: { A: 1 } });
      assert.deepEqual(await c.call('Good.Call', undefined), { Echo: null });
      await assert.rejects(c.call('Bad.Call', {}), (e: unknown) => e instanceof PluginStatusError && e.status === 500 && e.message === 'Bad.Call: it broke');
      await assert.rejects(c.call('Plain.Error', {}), (e: unknown) => e instanceof PluginStatusError && e.status === 404 && e.message === 'Plain.Error: 404 page not found');
      assert.equal(seen[0]!.accept, PLUGIN_MIME);
      assert.equal(seen[0]!.body, '{"A":1}\n');
      assert.equal(seen[1]!.body, '');
    } finally {
      s.close();
    }
  });

  it('retries a plugin that is not there until it comes, and gives up when the retry time is spent', async () => {
    const sock = join(dir, 'c2.sock');
    const waits: number[] = [];
    let server: Server | undefined;
    // The plugin comes up while the client waits for its second retry.
    const c = new PluginClient('p', {
      retryMs: 30_000, callTimeoutMs: 1000, resolve: async () => ({ unix: sock }),
      sleep: async (ms) => { waits.push(ms); if (waits.length === 2) server = await listen(sock, () => [200, { Up: true }]); },
    });
    try {
      assert.deepEqual(await c.call('X.Y', {}), { Up: true });
      assert.deepEqual(waits, [1000, 2000]);
    } finally {
      server?.close();
    }
    const gone = new PluginClient('p', { retryMs: 4000, callTimeoutMs: 1000, resolve: async () => ({ unix: join(dir, 'never.sock') }), sleep: async (ms) => { waits.push(ms); } });
    waits.length = 0;
    await assert.rejects(gone.call('X.Y', {}), (e: unknown) => e instanceof PluginUnreachableError && /^X\.Y: unix .*never\.sock: ENOENT/.test(e.message));
    // 0 s + 1 s, then 1 s + 2 s, then 4 s would end past 4 s: two waits.
    assert.deepEqual(waits, [1000, 2000]);
  });

  it('a call dropped mid-way is sent again; one that is not answered in time fails without a retry', async () => {
    const sock = join(dir, 'c3.sock');
    let n = 0;
    const s = await listen(sock, (method) => {
      n++;
      if (method === 'Drop.Once' && n === 1) return 'drop';
      return [200, { N: n }];
    });
    try {
      const c = new PluginClient('p', { retryMs: 5000, callTimeoutMs: 300, resolve: async () => ({ unix: sock }), sleep: async () => undefined });
      assert.deepEqual(await c.call('Drop.Once', {}), { N: 2 });
      const slow = createServer(() => undefined);
      const slowSock = join(dir, 'c4.sock');
      await new Promise<void>((r) => slow.listen(slowSock, () => r()));
      const c2 = new PluginClient('p', { retryMs: 5000, callTimeoutMs: 300, resolve: async () => ({ unix: slowSock }), sleep: async () => undefined });
      await assert.rejects(c2.call('Slow.Call', {}), (e: unknown) => e instanceof PluginUnreachableError && e.message === 'Slow.Call: no answer within 0.3s');
      slow.closeAllConnections();
      slow.close();
    } finally {
      s.close();
    }
  });
});

describe('plugin manager (activation)', () => {
  it('activates once, runs each subsystem\'s handshake, says 404 for a plugin that is nowhere or implements something else, and tries again after a failed activation', async () => {
    const sockets = join(dir, 'mgr');
    await fs.mkdir(sockets);
    const calls: string[] = [];
    let failActivate = true;
    const s = await listen(join(sockets, 'net.sock'), (method) => {
      calls.push(method);
      if (method === 'Plugin.Activate') return failActivate ? [500, { Err: 'not ready' }] : [200, { Implements: ['NetworkDriver', 'IpamDriver'] }];
      if (method === 'NetworkDriver.GetCapabilities') return [200, { Scope: 'local' }];
      return [404, '404 page not found'];
    });
    try {
      const m = new PluginManager({ paths: { sockets, specs: [] }, retryMs: 1000, callTimeoutMs: 1000 });
      await assert.rejects(m.get('nowhere', 'NetworkDriver'), (e: any) => e.status === 404 && e.message === 'plugin "nowhere" not found');
      await assert.rejects(m.get('net', 'NetworkDriver'), (e: any) => e.status === 500 && e.message === 'plugin "net": Plugin.Activate: not ready');
      failActivate = false;
      const p = await m.get('net', 'NetworkDriver');
      assert.deepEqual(p.network, { Scope: 'local' });
      // An IPAM without GetCapabilities is registered without them (Docker does so).
      assert.deepEqual(p.ipam, {});
      await m.get('net', 'IpamDriver');
      await assert.rejects(m.get('net', 'VolumeDriver'), (e: any) => e.status === 404);
      assert.deepEqual(calls, ['Plugin.Activate', 'Plugin.Activate', 'NetworkDriver.GetCapabilities', 'IpamDriver.GetCapabilities']);
    } finally {
      s.close();
    }
  });
});

describe('network registry with a plugin source', () => {
  it('activates a plugin for a new network, makes one without contact for a stored network, and leaves sandbox modes alone', async () => {
    const { NetworkRegistry } = await import('../../src/network/registry.js');
    const { NotFoundError } = await import('../../src/util/errors.js');
    const activated: string[] = [];
    const made: string[] = [];
    const fake = (name: string) => {
      made.push(name);
      return {
        name, avoidsRoutedSubnets: true, publishes: false, hostFirewall: false, external: true,
        activate: async () => { activated.push(name); if (name === 'missing') throw new NotFoundError(`plugin "${name}" not found`); },
        configure: async () => undefined, ensureNetwork: async () => undefined, deleteNetwork: async () => undefined,
        join: async () => undefined, leave: async () => undefined,
        requestPools: () => ({ pools: [] }), requestAddress: () => ({ ip: '', prefix: 0, gateway: '' }), releaseAddress: () => undefined,
      };
    };
    const r = new NetworkRegistry({});
    r.setPluginSource({ driver: fake, ipam: fake });
    await assert.rejects(r.loadDriver('missing'), (e: any) => e.status === 404);
    assert.equal(r.driver('missing'), undefined, 'a plugin that is nowhere is not registered');
    assert.equal((await r.loadDriver('weave'))?.name, 'weave');
    assert.equal(r.driver('weave')?.name, 'weave');
    assert.equal(await r.loadDriver('host'), undefined);
    const record = (Driver: string) => ({ Driver, IPAM: { Driver: 'calico-ipam' } }) as any;
    assert.equal(r.driverOf(record('stored'))?.name, 'stored');
    assert.equal(r.driverOf(record('null')), undefined);
    assert.equal(r.ipamOf(record('stored')).name, 'calico-ipam');
    assert.deepEqual(activated, ['missing', 'weave'], 'stored networks\' plugins are not contacted');
    assert.deepEqual(made.sort(), ['calico-ipam', 'missing', 'stored', 'weave']);
  });
});

describe('remote driver options', () => {
  it('hands the ports over as Docker 20.10 does (recorded from dockerd with -p 8080:80 --expose 53/udp)', async () => {
    const { portOptions } = await import('../../src/network/remotedriver.js');
    assert.deepEqual(portOptions({ bindings: { '80/tcp': [{ HostIp: '', HostPort: '8080' }] }, publishAll: false, exposed: ['53/udp', '80/tcp'] }), {
      exposed: [{ Proto: 6, Port: 80 }, { Proto: 17, Port: 53 }],
      portmap: [{ Proto: 6, Port: 80, IP: '', HostIP: '', HostPort: 8080, HostPortEnd: 8080 }],
    });
    assert.deepEqual(portOptions({ bindings: {}, publishAll: true, exposed: ['80/tcp'] }).portmap, [{ Proto: 6, Port: 80, IP: '', HostIP: '', HostPort: 0, HostPortEnd: 0 }]);
    assert.deepEqual(portOptions(undefined), { exposed: [], portmap: [] });
  });
});
