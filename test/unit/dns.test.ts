import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import dnsPacket from 'dns-packet';
import { answer, type Asker } from '../../src/dns/lookup.js';
import { DnsServer } from '../../src/dns/server.js';
import { openSandboxSockets } from '../../src/dns/sandbox.js';

/**
 * The resolver's real sockets, made by the addon in this process's own namespace (on 127.0.0.11,
 * which loopback answers for), served by the addon's thread like a container's.
 */
const loopbackSockets = async () => openSandboxSockets('/proc/thread-self/ns/net');

/**
 * The i-th packet of a fuzz run: random bytes (shorter than maxRandom) for even i, else `valid`
 * with a few bytes changed, and with `truncate` every seventh of those cut short as well.
 */
function fuzzPacket(valid: Buffer, i: number, maxRandom: number, truncate: boolean): Buffer {
  if (i % 2 === 0) return randomBytes(Math.floor(Math.random() * maxRandom));
  const msg = Buffer.from(valid);
  for (let k = 0; k < 1 + (i % 5); k++) msg[Math.floor(Math.random() * msg.length)] = Math.floor(Math.random() * 256);
  return truncate && i % 7 === 0 ? msg.subarray(0, Math.floor(Math.random() * msg.length)) : msg;
}

const asker: Asker = {
  containerId: 'c1',
  networks: [
    { id: 'n1', name: 'front', internal: false, endpoints: [
      { containerId: 'c1', containerName: 'web', ip: '172.18.0.2', names: ['web', 'www', 'aaaaaaaaaaaa'] },
      { containerId: 'c2', containerName: 'api', ip: '172.18.0.3', names: ['api', 'backend'] },
      { containerId: 'c3', containerName: 'api2', ip: '172.18.0.4', names: ['api2', 'backend'] },
    ] },
    { id: 'n2', name: 'back.net', internal: true, endpoints: [
      { containerId: 'c4', containerName: 'db', ip: '10.1.0.2', names: ['db'] },
    ] },
  ],
};

describe('DNS lookup rules', () => {
  it('resolves names, aliases and NAME.NETWORK case-insensitively', () => {
    assert.deepEqual(answer(asker, 'API', 'A'), { kind: 'addresses', ips: ['172.18.0.3'], type: 'A' });
    assert.deepEqual(answer(asker, 'www.', 'A'), { kind: 'addresses', ips: ['172.18.0.2'], type: 'A' });
    assert.deepEqual(answer(asker, 'db.back.net', 'A'), { kind: 'addresses', ips: ['10.1.0.2'], type: 'A' });
    assert.deepEqual(answer(asker, 'api.front', 'A'), { kind: 'addresses', ips: ['172.18.0.3'], type: 'A' });
    assert.deepEqual(answer(asker, 'api.back.net', 'A'), { kind: 'unknown' });
    const shared = answer(asker, 'backend', 'A');
    assert.equal(shared.kind, 'addresses');
    assert.deepEqual((shared as { ips: string[] }).ips.sort(), ['172.18.0.3', '172.18.0.4']);
    assert.deepEqual(answer(asker, 'api', 'AAAA'), { kind: 'nodata' });
    assert.deepEqual(answer(asker, 'nosuch', 'A'), { kind: 'unknown' });
    assert.deepEqual(answer(asker, '2.0.1.10.in-addr.arpa', 'PTR'), { kind: 'ptr', name: 'db.back.net' });
    assert.deepEqual(answer(asker, '9.9.9.9.in-addr.arpa', 'PTR'), { kind: 'unknown' });
  });
});

describe('DNS packet handling under hostile input', () => {
  const server = new DnsServer({ askerFor: (id) => (id === 'c1' ? { ...asker, upstreams: ['127.0.0.1:1'] } : undefined), generation: () => 1 });
  const valid = dnsPacket.encode({ type: 'query', id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'api', class: 'IN' }] });

  it('answers a valid query and ignores strangers', async () => {
    const reply = await server.handle('c1', valid, 'udp');
    const decoded = dnsPacket.decode(reply!);
    assert.equal(decoded.id, 7);
    assert.deepEqual(decoded.answers!.map((a) => (a as { data: unknown }).data), ['172.18.0.3']);
    assert.equal(await server.handle('c9', valid, 'udp'), undefined);
  });

  it('never throws or stalls on random or mutated packets (fuzz)', async () => {
    // A stall is one packet whose handling never settles: each is bounded on its own, so a busy
    // machine (slow as a whole) does not fail this, and one hung packet does.
    const bounded = <T>(p: Promise<T>, i: number) => Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`packet ${i} not handled within 5 s`)), 5000).unref())]);
    for (let i = 0; i < 3000; i++) {
      const msg = fuzzPacket(valid, i, 600, true);
      // Names that fall through to forwarding meet an unreachable upstream: keep those out of the loop.
      const decoded = (() => { try { return dnsPacket.decode(msg); } catch { return undefined; } })();
      const q = decoded?.questions?.[0];
      if (q && answer(asker, q.name, q.type).kind === 'unknown' && decoded!.type === 'query' && decoded!.questions!.length === 1) continue;
      const reply = await bounded(server.handle('c1', msg, 'udp'), i);
      if (reply) assert.ok(reply.length >= 12);
    }
    // and it still answers afterwards
    assert.ok(await server.handle('c1', valid, 'udp'));
  });
});

describe('DNS answer cache', () => {
  it('serves repeated UDP queries from the cache, with each query\'s id, until the directory changes', async () => {
    const { createSocket } = await import('node:dgram');
    let generation = 1;
    let apiIp = '172.18.0.3';
    const view = (): Asker & { upstreams: string[] } => ({
      containerId: 'c1', upstreams: [],
      networks: [{ id: 'n1', name: 'front', internal: false, endpoints: [{ containerId: 'c2', containerName: 'api', ip: apiIp, names: ['api'] }] }],
    });
    const server = new DnsServer({ askerFor: (id) => (id === 'c1' ? view() : undefined), generation: () => generation });
    const port = server.serve('c1', await loopbackSockets());
    const client = createSocket('udp4');
    const ask = (id: number) => new Promise<dnsPacket.Packet>((resolve) => {
      client.once('message', (m) => resolve(dnsPacket.decode(m)));
      client.send(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'api', class: 'IN' }] }), port, '127.0.0.11');
    });
    const data = (p: dnsPacket.Packet) => p.answers!.map((a) => (a as { data: unknown }).data);
    try {
      for (const id of [11, 12, 13]) {
        const r = await ask(id);
        assert.equal(r.id, id);
        assert.deepEqual(data(r), ['172.18.0.3']);
      }
      // Without a new generation the cached answer stands (this is what makes hits cheap)…
      apiIp = '172.18.0.9';
      assert.deepEqual(data(await ask(14)), ['172.18.0.3']);
      // …and a new generation is seen at once (the directory says so as it changes).
      generation++;
      server.directoryChanged();
      assert.deepEqual(data(await ask(15)), ['172.18.0.9']);
      assert.deepEqual(data(await ask(16)), ['172.18.0.9']);
    } finally {
      client.close();
      server.closeAll();
    }
  });
});

describe('DNS answer cache scope', () => {
  it('empties the caches of the changed networks\' members and of the named containers, no others', async () => {
    const { createSocket } = await import('node:dgram');
    let generation = 1;
    const ips: Record<string, string> = { c1: '172.18.0.3', c2: '172.19.0.3' };
    const nets: Record<string, string> = { c1: 'n1', c2: 'n2' };
    // The view as last built per container: the scope is read from it, never from a new build.
    const last = new Map<string, Asker>();
    let builds = 0;
    const server = new DnsServer({
      askerFor: (id) => {
        builds++;
        const a = ips[id] ? { containerId: id, upstreams: [], networks: [{ id: nets[id]!, name: nets[id]!, internal: false, endpoints: [{ containerId: 'x', containerName: 'api', ip: ips[id]!, names: ['api'] }] }] } : undefined;
        if (a) last.set(id, a);
        return a;
      },
      generation: () => generation,
      lastAskerFor: (id) => last.get(id),
    });
    const ports: Record<string, number> = { c1: server.serve('c1', await loopbackSockets()), c2: server.serve('c2', await loopbackSockets()) };
    const client = createSocket('udp4');
    let id = 100;
    const ask = (c: string) => new Promise<string>((resolve) => {
      client.once('message', (m) => resolve(String((dnsPacket.decode(m).answers![0] as { data: unknown }).data)));
      client.send(dnsPacket.encode({ type: 'query', id: id++, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'api', class: 'IN' }] }), ports[c]!, '127.0.0.11');
    });
    try {
      assert.equal(await ask('c1'), '172.18.0.3');
      assert.equal(await ask('c2'), '172.19.0.3');
      // The stub changes both answers; only what the scope names may be refreshed.
      ips.c1 = '172.18.0.9';
      ips.c2 = '172.19.0.9';
      generation++;
      const before = builds;
      server.directoryChanged({ networks: ['n1'], containers: [] });
      assert.equal(builds, before, 'a change built the whole view to find whose caches to empty');
      assert.equal(await ask('c1'), '172.18.0.9');
      assert.equal(await ask('c2'), '172.19.0.3', 'c2 is on no changed network: its cache stands');
      generation++;
      server.directoryChanged({ networks: [], containers: ['c2'] });
      assert.equal(await ask('c2'), '172.19.0.9');
    } finally {
      client.close();
      server.closeAll();
    }
  });
});

describe('DNS answers per container', () => {
  const query = (id: number, name: string) => dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name, class: 'IN' }] });
  const data = (p: dnsPacket.Packet) => (p.answers ?? []).map((a) => (a as { data: unknown }).data);

  it('keeps each container\'s answers apart: the same query bytes on two containers\' sockets', async () => {
    const { createSocket } = await import('node:dgram');
    const views: Record<string, string> = { c1: '172.18.0.3', c2: '10.7.0.3' };
    const server = new DnsServer({
      askerFor: (id) => views[id] ? { containerId: id, upstreams: [], networks: [{ id: 'n', name: 'n', internal: true, endpoints: [{ containerId: 'x', containerName: 'api', ip: views[id]!, names: ['api'] }] }] } : undefined,
      generation: () => 1,
    });
    const ports = [server.serve('c1', await loopbackSockets()), server.serve('c2', await loopbackSockets())];
    const client = createSocket('udp4');
    const ask = (port: number, id: number) => new Promise<dnsPacket.Packet>((resolve) => {
      client.once('message', (m) => resolve(dnsPacket.decode(m)));
      client.send(query(id, 'api'), port, '127.0.0.11');
    });
    try {
      for (let round = 0; round < 3; round++) {
        assert.deepEqual(data(await ask(ports[0]!, 1)), ['172.18.0.3']);
        assert.deepEqual(data(await ask(ports[1]!, 1)), ['10.7.0.3']);
      }
    } finally {
      client.close();
      server.closeAll();
    }
  });

  it('truncates a shared alias too large for UDP, and answers it whole over TCP', async () => {
    const endpoints = Array.from({ length: 60 }, (_, i) => ({ containerId: `m${i}`, containerName: `m${i}`, ip: `172.19.0.${i + 2}`, names: [`m${i}`, 'crowd'] }));
    const server = new DnsServer({ askerFor: () => ({ containerId: 'c1', upstreams: [], networks: [{ id: 'n', name: 'n', internal: false, endpoints }] }), generation: () => 1 });
    const udp = dnsPacket.decode((await server.handle('c1', query(5, 'crowd'), 'udp'))!);
    assert.ok((udp.flags! & dnsPacket.TRUNCATED_RESPONSE) !== 0);
    assert.equal(udp.answers!.length, 0);
    const tcp = dnsPacket.decode((await server.handle('c1', query(6, 'crowd'), 'tcp'))!);
    assert.equal(tcp.answers!.length, 60);
  });

  it('the native hot path survives a storm of random and mutated datagrams and still answers', async () => {
    const { createSocket } = await import('node:dgram');
    // An internal network: whatever the garbage asks is answered locally, never forwarded anywhere.
    const server = new DnsServer({
      askerFor: (id) => (id === 'c1' ? { containerId: 'c1', upstreams: [], networks: [{ id: 'n', name: 'n', internal: true, endpoints: [{ containerId: 'x', containerName: 'api', ip: '10.8.0.3', names: ['api'] }] }] } : undefined),
      generation: () => 1,
    });
    const port = server.serve('c1', await loopbackSockets());
    const client = createSocket('udp4');
    await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()));
    const valid = query(9, 'api');
    let second: NodeJS.Timeout | undefined;
    try {
      for (let i = 0; i < 3000; i++) {
        client.send(fuzzPacket(valid, i, 700, false), port, '127.0.0.11');
        if (i % 200 === 0) await new Promise((r) => setImmediate(r));
      }
      const answered = await new Promise<dnsPacket.Packet | undefined>((resolve) => {
        const timer = setTimeout(() => resolve(undefined), 3000);
        client.on('message', (m) => {
          if (m.length >= 2 && m.readUInt16BE(0) === 4321) { clearTimeout(timer); resolve(dnsPacket.decode(m)); }
        });
        const q = query(4321, 'api');
        // Twice: the first answer comes from JavaScript, the second from the addon's cache.
        client.send(q, port, '127.0.0.11');
        second = setTimeout(() => client.send(q, port, '127.0.0.11'), 200);
      });
      assert.ok(answered, 'no answer after the storm');
      assert.deepEqual(data(answered), ['10.8.0.3']);
    } finally {
      // The first answer may come before the second query is sent: never send on a closed socket.
      clearTimeout(second);
      client.close();
      server.closeAll();
    }
  });
});
