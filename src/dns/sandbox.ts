import { createServer, type Server } from 'node:net';
import { RESOLVER_ADDRESS } from '../model/network.js';
import { nativeAddon } from '../util/cjs.js';

/**
 * Docker's way to the embedded resolver, for every driver: its UDP and TCP sockets are opened
 * *inside* the container's namespace, on 127.0.0.11 and a free port, and served by berthd's event
 * loop. A query then never leaves the container's loopback: no veth, no bridge, no NAT in berthd's
 * namespace. Node cannot enter a namespace, so the native addon `berth-netns.node` (native/)
 * creates the sockets in one synchronous call (setns in, socket/bind/listen, setns back); a
 * socket stays in the namespace it was made in for its whole life.
 */

/** The UDP socket stays a bare descriptor: the addon's thread serves it (`DnsFast`). */
export interface SandboxSockets { udpFd: number; tcp: Server; port: number }

/** The addon's UDP hot path (native/berth-dnsfast.c). */
interface DnsFast {
  /** `recvNs`: when the thread read the query (CLOCK_MONOTONIC, as process.hrtime), for `send`. */
  start(onMiss: (id: number, query: Buffer, address: string, port: number, recvNs: number) => void): void;
  add(fd: number): number;
  remove(id: number): void;
  remember(id: number, query: Buffer, answer: Buffer): void;
  /** Forgets the cached answers of these sockets, or of every socket. */
  clear(ids?: number[]): void;
  /** With `recvNs` the answer is counted by response code and timed from the query's receipt. */
  send(fd: number, answer: Buffer, address: string, port: number, recvNs?: number): boolean;
  stats(): FastStats;
  /** [socket id, UDP queries] of every socket served now. */
  perSocket(): Array<[number, number]>;
  /** Adds a TCP answer's time (seconds) to the resolver path's histogram. */
  observe(seconds: number): void;
}

/** The hot path's counters (native/berth-dnsfast.c): UDP only, every socket since berthd started. */
export interface FastStats {
  queries: number;
  dropped: number;
  /** Answers sent, by response code (0–15). */
  rcodes: number[];
  /** Upper bounds of the latency buckets, in seconds; each path has one more bucket (+Inf). */
  bounds: number[];
  cache: { buckets: number[]; sumSeconds: number };
  resolver: { buckets: number[]; sumSeconds: number };
}

interface NetnsAddon {
  openSockets(netnsPath: string, address: string, port: number): { udp: number; tcp: number; port: number };
  dnsfast: DnsFast;
}

const netnsAddon = nativeAddon<NetnsAddon>('berth-netns.node', 'embedded DNS');

/**
 * What the rest of berthd sees of the hot path: one serving thread per process, shared by every
 * DnsServer. Unlike the addon's own add(), it takes each socket's handler for the queries the
 * cache cannot answer (`onMiss`), and returns the socket's id.
 */
export type FastPath = Omit<DnsFast, 'start' | 'add'> & {
  add(fd: number, onMiss: MissHandler): number;
};
type MissHandler = (query: Buffer, address: string, port: number, recvNs: number) => void;

const missHandlers = new Map<number, MissHandler>();
let fastPath: FastPath | undefined;

export function dnsFastPath(): FastPath {
  if (!fastPath) {
    const f = netnsAddon().dnsfast;
    f.start((id, query, address, port, recvNs) => missHandlers.get(id)?.(query, address, port, recvNs));
    fastPath = {
      add: (fd, onMiss) => {
        const id = f.add(fd);
        missHandlers.set(id, onMiss);
        return id;
      },
      remove: (id) => {
        f.remove(id);
        missHandlers.delete(id);
      },
      remember: (id, query, answer) => f.remember(id, query, answer),
      clear: (ids) => f.clear(ids),
      send: (fd, answer, address, port, recvNs) => f.send(fd, answer, address, port, recvNs),
      stats: () => f.stats(),
      perSocket: () => f.perSocket(),
      observe: (seconds) => f.observe(seconds),
    };
  }
  return fastPath;
}

/** The hot path's counters, zero before any socket was served (the thread starts with the first). */
export function fastStats(): FastStats {
  return netnsAddon().dnsfast.stats();
}

/**
 * The resolver's sockets in the namespace pinned at `netnsPath` (berthd's own: /proc/thread-self/ns/net),
 * on a port free for UDP and TCP.
 */
export function openSandboxSockets(netnsPath: string, preferPort = 0): SandboxSockets {
  let fds;
  try {
    // The port the namespace's redirect already names, when it is still free: no rule to rewrite.
    try {
      fds = netnsAddon().openSockets(netnsPath, RESOLVER_ADDRESS, preferPort);
    } catch (e) {
      if (!preferPort) throw e;
      fds = netnsAddon().openSockets(netnsPath, RESOLVER_ADDRESS, 0);
    }
  } catch (e) {
    throw new Error(`embedded DNS: cannot open ${RESOLVER_ADDRESS} in the container namespace: ${(e as Error).message}`);
  }
  // Node closes the TCP descriptor with its server; the UDP one stays the caller's to close.
  const tcp = createServer();
  tcp.listen({ fd: fds.tcp });
  return { udpFd: fds.udp, tcp, port: fds.port };
}
