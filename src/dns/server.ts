import { createSocket } from 'node:dgram';
import { closeSync, promises as fs } from 'node:fs';
import { connect, type Server, type Socket as TcpSocket } from 'node:net';
import type * as DnsPacket from 'dns-packet';
import { requireCjs } from '../util/cjs.js';
import { parseResolvConf } from '../util/resolvconf.js';
import { answer, type Asker } from './lookup.js';
import { dnsFastPath, fastStats, openSandboxSockets, type FastPath, type FastStats, type SandboxSockets } from './sandbox.js';

/** What the server needs to know about containers, supplied by the engine. */
export interface DnsDirectory {
  /** The container itself, as the asker on the sockets inside its own namespace (they serve no one else). */
  askerFor(containerId: string): (Asker & { upstreams: string[] }) | undefined;
  /** Changes whenever any answer may change (an endpoint joined, left, was renamed…). */
  generation(): number;
  /**
   * The container as the last view built had it, without building a new one (a view is built
   * from every endpoint, local and remote). Which caches a change empties is decided from it.
   */
  lastAskerFor?(containerId: string): Asker | undefined;
}

const TTL = 600;
const MAX_IN_FLIGHT = 1024;
const UPSTREAM_TIMEOUT_MS = 4000;

/** What /metrics shows of the resolver: every container's, since berthd started. */
export interface DnsStats {
  queries: { udp: number; tcp: number };
  /** Answers sent, by response code (0–15), UDP and TCP. */
  rcodes: number[];
  /** UDP queries dropped because too many waited for the event loop. */
  dropped: number;
  /** Queries sent upstream, by outcome: an answer relayed, every server failed, or none to ask. */
  forwarded: { answered: number; failed: number; refused: number };
  /** From a query's receipt to its answer's send: from the cache (UDP), or through the full lookup (UDP from the thread's receipt, TCP from the message's). */
  latency: Pick<FastStats, 'bounds' | 'cache' | 'resolver'>;
  /** Queries (UDP and TCP) of each container whose resolver is open now, since it was opened. */
  byContainer: Array<{ containerId: string; queries: number }>;
}

interface SandboxListener {
  containerId: string;
  udpFd: number;
  /** The socket's id in the addon's serving thread. */
  fastId: number;
  tcp: Server;
  port: number;
  conns: Set<TcpSocket>;
  closed: boolean;
  tcpQueries: number;
}

type Packet = DnsPacket.Packet;
const dnsPacket = requireCjs('dns-packet') as typeof DnsPacket;

const RCODE = { NXDOMAIN: 3, SERVFAIL: 2, REFUSED: 5 } as const;

/** dns-packet takes the response code only as the low bits of the flags. */
function withRcode(p: Packet, rcode: keyof typeof RCODE): Packet {
  return { ...p, flags: ((p.flags ?? 0) & ~0xf) | RCODE[rcode] };
}

/** The largest UDP answer the client accepts: its EDNS buffer size, or 512 without EDNS. */
function maxUdpSize(q: Packet): number {
  const opt = q.additionals?.find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
  return Math.max(512, Math.min(opt?.udpPayloadSize ?? 512, 65535));
}

/** Over UDP an answer too large for the client goes out truncated, so it asks again over TCP. */
function fitUdp(reply: Buffer, max: number): Buffer {
  if (reply.length <= max) return reply;
  const qdEnd = questionEnd(reply);
  const out = Buffer.from(reply.subarray(0, qdEnd));
  out.writeUInt16BE(out.readUInt16BE(2) | 0x0200, 2);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(0, 10);
  return out;
}

function questionEnd(msg: Buffer): number {
  let off = 12;
  for (let q = msg.readUInt16BE(4); q > 0 && off < msg.length; q--) {
    while (off < msg.length && msg[off] !== 0) off += (msg[off]! & 0xc0) === 0xc0 ? 1 : msg[off]! + 1;
    off += 5;
  }
  return Math.min(off, msg.length);
}

/**
 * berth's embedded DNS server, as Docker's: every container on a user-defined network (bridge,
 * macvlan, ipvlan) has its own UDP and TCP sockets on 127.0.0.11 inside its own namespace
 * (`sandbox.ts`). The addon's thread answers UDP queries it has a cached answer for; this object
 * answers the rest (and TCP) on berthd's event loop, and tells the addon what it may cache. A
 * socket answers as the container whose namespace it lives in and for no one else, and no socket
 * exists on any of the host's addresses, so it is never an open resolver.
 */
export class DnsServer {
  /** Sockets inside containers' namespaces, by container id and by their id in the addon. */
  private readonly sandboxes = new Map<string, SandboxListener>();
  private fast?: FastPath;
  private inFlight = 0;
  private hostUpstreams: { at: number; list: string[] } = { at: 0, list: [] };
  private readonly counts = { tcpQueries: 0, tcpRcodes: new Array<number>(16).fill(0), forwarded: { answered: 0, failed: 0, refused: 0 } };

  constructor(private readonly directory: DnsDirectory, private readonly hostResolvConf = '/etc/resolv.conf') {}

  closeAll(): void {
    for (const id of [...this.sandboxes.keys()]) this.closeSandbox(id);
  }

  /**
   * Must be called synchronously whenever an answer may change (the directory's generation moved):
   * the UDP hot path answers from its cache without asking JavaScript. A container sees only the
   * names of the networks it is on, so a change on some networks empties the caches of their
   * members and of the containers named (one that just left them); without a scope, every cache.
   * Membership comes from the last view built, not a new one: that was a build of the whole
   * directory (every endpoint of every host) for each endpoint that came or went anywhere, in the
   * step every host's `run` and `connect` wait for. The last view is right for every cache that
   * holds anything: a cache is emptied at each change of its own container's networks, and is
   * filled only by answers, each of which builds the view first if it is out of date.
   */
  directoryChanged(scope?: { networks: string[]; containers: string[] }): void {
    if (!this.fast) return;
    if (!scope) return this.fast.clear();
    const ids: number[] = [];
    for (const l of this.sandboxes.values()) {
      const asker = this.directory.lastAskerFor ? this.directory.lastAskerFor(l.containerId) : this.directory.askerFor(l.containerId);
      if (scope.containers.includes(l.containerId) || asker?.networks.some((n) => scope.networks.includes(n.id))) ids.push(l.fastId);
    }
    if (ids.length) this.fast.clear(ids);
  }

  /** The port of the container's in-namespace resolver, opening it first if needed. */
  serveSandbox(containerId: string, netnsPath: string, preferPort?: number): number {
    const existing = this.sandboxes.get(containerId);
    if (existing) return existing.port;
    return this.serve(containerId, openSandboxSockets(netnsPath, preferPort));
  }

  /** Serves bound sockets as the resolver of one container; returns their port. */
  serve(containerId: string, sockets: SandboxSockets): number {
    this.closeSandbox(containerId);
    const { udpFd, tcp, port } = sockets;
    this.fast ??= dnsFastPath();
    const l: SandboxListener = { containerId, udpFd, fastId: 0, tcp, port, conns: new Set(), closed: false, tcpQueries: 0 };
    try {
      l.fastId = this.fast.add(udpFd, (query, address, port, recvNs) => this.onMiss(l, query, address, port, recvNs));
    } catch (e) {
      closeSync(udpFd);
      tcp.close();
      throw e;
    }
    tcp.on('connection', (sock: TcpSocket) => {
      // Held open, an accepted socket would keep the namespace alive after the container.
      l.conns.add(sock);
      sock.on('close', () => l.conns.delete(sock));
      this.serveTcp(sock, async (msg) => {
        this.counts.tcpQueries++;
        l.tcpQueries++;
        const t0 = process.hrtime.bigint();
        const reply = await this.answerFor(this.directory.askerFor(containerId), msg, 'tcp');
        if (reply && reply.length >= 4) {
          this.counts.tcpRcodes[reply[3]! & 0x0f]!++;
          this.fast?.observe(Number(process.hrtime.bigint() - t0) / 1e9);
        }
        return reply;
      });
    });
    tcp.on('error', () => undefined);
    this.sandboxes.set(containerId, l);
    return port;
  }

  hasSandbox(containerId: string): boolean {
    return this.sandboxes.has(containerId);
  }

  /** Closes every socket berthd holds in the container's namespace, so the namespace can go. */
  closeSandbox(containerId: string): void {
    const l = this.sandboxes.get(containerId);
    if (!l) return;
    l.closed = true;
    // The serving thread lets go of the descriptor before it is closed (and its number reused).
    this.fast!.remove(l.fastId);
    closeSync(l.udpFd);
    l.tcp.close();
    for (const c of l.conns) c.destroy();
    this.sandboxes.delete(containerId);
  }

  /** A UDP query the addon's cache could not answer: the full lookup, and the answer kept if it may be. */
  private onMiss(l: SandboxListener, msg: Buffer, address: string, port: number, recvNs: number): void {
    if (l.closed) return;
    const generation = this.directory.generation();
    const keep = (reply: Buffer) => {
      if (!l.closed && this.directory.generation() === generation) this.fast!.remember(l.fastId, msg, reply);
      return reply;
    };
    void this.answerFor(this.directory.askerFor(l.containerId), msg, 'udp', keep).then((reply) => {
      if (reply && !l.closed) this.fast!.send(l.udpFd, reply, address, port, recvNs);
    });
  }

  private serveTcp(sock: TcpSocket, reply: (msg: Buffer) => Promise<Buffer | undefined>): void {
    let buf = Buffer.alloc(0);
    sock.setTimeout(10_000, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        void reply(msg).then((r) => {
          if (r && !sock.destroyed) {
            const lenBuf = Buffer.alloc(2);
            lenBuf.writeUInt16BE(r.length);
            sock.write(Buffer.concat([lenBuf, r]));
          }
        });
      }
      if (buf.length > 70_000) sock.destroy();
    });
  }

  /** Answers one query as `containerId`; undefined means drop it (no such container, or unparseable). */
  async handle(containerId: string, msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    return this.answerFor(this.directory.askerFor(containerId), msg, transport);
  }

  /**
   * `keep` receives the answers that depend only on the directory (never a forwarded one, never a
   * shuffled list), for the caller's cache.
   */
  private async answerFor(asker: (Asker & { upstreams: string[] }) | undefined, msg: Buffer, transport: 'udp' | 'tcp', keep: (reply: Buffer) => Buffer = (r) => r): Promise<Buffer | undefined> {
    if (!asker) return undefined;
    // dns-packet allocates arrays as long as the header's counts before it reads a byte of them, so
    // a 12-byte packet claiming 65535 records of each kind costs a millisecond or more: refuse any
    // packet whose counts its length cannot hold (a question takes 5 bytes, a record 11) first.
    if (msg.length < 12) return undefined;
    const records = msg.readUInt16BE(6) + msg.readUInt16BE(8) + msg.readUInt16BE(10);
    if (msg.readUInt16BE(4) !== 1 || 12 + 5 + 11 * records > msg.length) return formErr(msg);
    let query: Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return formErr(msg);
    }
    const q = query.questions?.[0];
    if (query.type !== 'query' || !q || query.questions!.length !== 1) return formErr(msg);
    const base: Packet = {
      type: 'response', id: query.id, flags: (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
      questions: [q],
    };
    const local = answer(asker, q.name, q.type);
    switch (local.kind) {
      case 'addresses': {
        const reply = dnsPacket.encode({ ...base, answers: local.ips.map((ip) => ({ type: local.type, name: q.name, ttl: TTL, class: 'IN', data: ip })) } as Packet);
        // Several addresses are shuffled afresh for every query (round-robin), so only one is kept;
        // a shared alias with many members may not fit the client's UDP size (it then asks over TCP).
        if (local.ips.length === 1) return keep(reply);
        return transport === 'udp' ? fitUdp(reply, maxUdpSize(query)) : reply;
      }
      case 'nodata':
        return keep(dnsPacket.encode(base));
      case 'ptr':
        return keep(dnsPacket.encode({ ...base, answers: [{ type: 'PTR', name: q.name, ttl: TTL, class: 'IN', data: local.name }] } as Packet));
    }
    // Not a container name: internal-only containers get no answer from outside.
    if (asker.networks.every((n) => n.internal)) return keep(dnsPacket.encode(withRcode(base, 'NXDOMAIN')));
    const reply = await this.forward(msg, base, asker.upstreams.length ? asker.upstreams : await this.upstreams(), transport);
    return transport === 'udp' ? fitUdp(reply, maxUdpSize(query)) : reply;
  }

  stats(): DnsStats {
    const f = fastStats();
    return {
      queries: { udp: f.queries, tcp: this.counts.tcpQueries },
      rcodes: f.rcodes.map((n, i) => n + this.counts.tcpRcodes[i]!),
      dropped: f.dropped,
      forwarded: { ...this.counts.forwarded },
      latency: { bounds: f.bounds, cache: f.cache, resolver: f.resolver },
      byContainer: this.perContainer(),
    };
  }

  private perContainer(): Array<{ containerId: string; queries: number }> {
    const udp = new Map(this.fast?.perSocket() ?? []);
    return [...this.sandboxes.values()].map((l) => ({ containerId: l.containerId, queries: (udp.get(l.fastId) ?? 0) + l.tcpQueries }));
  }

  private async upstreams(): Promise<string[]> {
    if (Date.now() - this.hostUpstreams.at > 5000) {
      const text = await fs.readFile(this.hostResolvConf, 'utf8').catch(() => '');
      this.hostUpstreams = { at: Date.now(), list: parseResolvConf(text).nameservers.slice(0, 3) };
    }
    return this.hostUpstreams.list;
  }

  private async forward(msg: Buffer, base: Packet, upstreams: string[], transport: 'udp' | 'tcp'): Promise<Buffer> {
    if (upstreams.length === 0 || this.inFlight >= MAX_IN_FLIGHT) {
      this.counts.forwarded.refused++;
      return dnsPacket.encode(withRcode(base, upstreams.length ? 'REFUSED' : 'SERVFAIL'));
    }
    this.inFlight++;
    try {
      for (const server of upstreams) {
        try {
          let reply = transport === 'tcp' ? await queryTcp(server, msg) : await queryUdp(server, msg);
          // A truncated UDP answer is asked again over TCP and relayed whole.
          if (transport === 'udp' && (reply.readUInt16BE(2) & 0x0200) !== 0) reply = await queryTcp(server, msg).catch(() => reply);
          const rcode = reply.readUInt16BE(2) & 0x000f;
          if (rcode === 2 || rcode === 5) continue; // SERVFAIL, REFUSED: try the next server
          this.counts.forwarded.answered++;
          return reply;
        } catch { /* timeout or unreachable: next server */ }
      }
      this.counts.forwarded.failed++;
      return dnsPacket.encode(withRcode(base, 'SERVFAIL'));
    } finally {
      this.inFlight--;
    }
  }
}

function formErr(msg: Buffer): Buffer | undefined {
  if (msg.length < 12) return undefined;
  const out = Buffer.from(msg.subarray(0, 12));
  out.writeUInt16BE(0x8001 | (msg.readUInt16BE(2) & 0x0100), 2); // QR, RD echoed, FORMERR
  out.writeUInt16BE(0, 4);
  out.writeUInt32BE(0, 6);
  out.writeUInt16BE(0, 10);
  return out;
}

function hostPort(server: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(server);
  if (server.includes(':') && !server.includes('.')) return { host: server, port: 53 };
  return { host: m?.[1] ?? server, port: Number(m?.[2] ?? 53) };
}

function queryUdp(server: string, msg: Buffer): Promise<Buffer> {
  const { host, port } = hostPort(server);
  return new Promise((resolve, reject) => {
    const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const id = msg.readUInt16BE(0);
    const timer = setTimeout(() => { sock.close(); reject(new Error('timeout')); }, UPSTREAM_TIMEOUT_MS);
    sock.on('message', (reply) => {
      if (reply.length < 12 || reply.readUInt16BE(0) !== id) return;
      clearTimeout(timer);
      sock.close();
      resolve(reply);
    });
    sock.on('error', (e) => { clearTimeout(timer); sock.close(); reject(e); });
    // Connected, the socket takes datagrams from that server only: no one else can slip in a reply.
    sock.connect(port, host, () => sock.send(msg));
  });
}

function queryTcp(server: string, msg: Buffer): Promise<Buffer> {
  const { host, port } = hostPort(server);
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('timeout')); }, UPSTREAM_TIMEOUT_MS);
    sock.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(msg.length);
      sock.write(Buffer.concat([len, msg]));
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        clearTimeout(timer);
        sock.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}
