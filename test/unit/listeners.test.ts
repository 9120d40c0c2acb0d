import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { describe, it } from 'node:test';
import { listeningPorts } from '../../src/daemon/listeners.js';

const listen = (host: string) => new Promise<Server>((res) => { const s = createServer(); s.listen(0, host, () => res(s)); });
const portOf = (s: Server) => (s.address() as { port: number }).port;

describe('listeners: the ports a namespace listens on, from /proc/PID/net', () => {
  it('finds TCP listeners on any address and bound UDP sockets, not loopback-only ones or closed ones', async () => {
    const any4 = await listen('0.0.0.0');
    const any6 = await listen('::');
    const loop = await listen('127.0.0.1');
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '0.0.0.0', r));
    try {
      const seen = await listeningPorts(process.pid);
      assert.ok(seen.has(`${portOf(any4)}/tcp`), 'a listener on 0.0.0.0');
      assert.ok(seen.has(`${portOf(any6)}/tcp`), 'a listener on ::');
      assert.ok(!seen.has(`${portOf(loop)}/tcp`), 'a listener on 127.0.0.1 alone gets no balanced connection');
      assert.ok(seen.has(`${udp.address().port}/udp`), 'a bound UDP socket');
      assert.ok(!seen.has(`${udp.address().port}/tcp`), 'UDP is not TCP');
      const closed = portOf(any4);
      await new Promise((r) => any4.close(r));
      assert.ok(!(await listeningPorts(process.pid)).has(`${closed}/tcp`), 'a closed listener');
    } finally {
      for (const s of [any4, any6, loop]) if (s.listening) s.close();
      udp.close();
    }
  });

  it('finds nothing for a process that is gone', async () => {
    assert.equal((await listeningPorts(2 ** 22 + 12345)).size, 0);
  });
});
