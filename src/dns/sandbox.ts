import { createServer, type Server } from 'node:net';
import { nftApply } from '../kernel/nft.js';
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
  start(onMiss: (id: number, query: Buffer, address: string, port: number) => void): void;
  add(fd: number): number;
  remove(id: number): void;
  remember(id: number, query: Buffer, answer: Buffer): void;
  /** Forgets the cached answers of these sockets, or of every socket. */
  clear(ids?: number[]): void;
  send(fd: number, answer: Buffer, address: string, port: number): boolean;
}

interface NetnsAddon {
  openSockets(netnsPath: string, address: string, port: number): { udp: number; tcp: number; port: number };
  dnsfast: DnsFast;
}

export const RESOLVER_ADDRESS = '127.0.0.11';
const netnsAddon = nativeAddon<NetnsAddon>('berth-netns.node', 'embedded DNS');

/**
 * What the rest of berthd sees of the hot path: one serving thread per process, shared by every
 * DnsServer. Unlike the addon's own add(), it takes each socket's handler for the queries the
 * cache cannot answer (`onMiss`), and returns the socket's id.
 */
export type FastPath = Omit<DnsFast, 'start' | 'add'> & {
  add(fd: number, onMiss: (query: Buffer, address: string, port: number) => void): number;
};

const missHandlers = new Map<number, (query: Buffer, address: string, port: number) => void>();
let fastPath: FastPath | undefined;

export function dnsFastPath(): FastPath {
  if (!fastPath) {
    const f = netnsAddon().dnsfast;
    f.start((id, query, address, port) => missHandlers.get(id)?.(query, address, port));
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
      send: (fd, answer, address, port) => f.send(fd, answer, address, port),
    };
  }
  return fastPath;
}

/**
 * The resolver's sockets in the namespace pinned at `netnsPath` (berthd's own: /proc/thread-self/ns/net),
 * on a port free for UDP and TCP.
 */
export function openSandboxSockets(netnsPath: string): SandboxSockets {
  let fds;
  try {
    fds = netnsAddon().openSockets(netnsPath, RESOLVER_ADDRESS, 0);
  } catch (e) {
    throw new Error(`embedded DNS: cannot open ${RESOLVER_ADDRESS} in the container namespace: ${(e as Error).message}`);
  }
  // Node closes the TCP descriptor with its server; the UDP one stays the caller's to close.
  const tcp = createServer();
  tcp.listen({ fd: fds.tcp });
  return { udpFd: fds.udp, tcp, port: fds.port };
}

/**
 * Inside the container's namespace, 127.0.0.11:53 is sent to the resolver's own port on the same
 * address, as Docker does, so a process in the container may still bind port 53 for itself. Unlike
 * Docker's DNAT this is a stateless rewrite of the port, both ways, ahead of conntrack (`notrack`):
 * a query costs no conntrack entry (nothing fills the host-wide conntrack table, and there is no
 * insertion race between the A and AAAA queries a libc sends at once from one socket, the cause of
 * the well-known 5 s DNS stalls behind DNAT), and with no NAT rule the namespace registers no
 * conntrack hooks at all. The reply rule matches only the resolver's own socket: berthd holds its port.
 */
export function sandboxRedirectRules(port: number, newNamespace = false): string {
  const a = RESOLVER_ADDRESS;
  return [
    // Replacing a table costs the kernel 6-19 ms here (its hooks go through RCU); a namespace made
    // moments ago has none to replace.
    ...(newNamespace ? [] : ['table ip berth_dns', 'delete table ip berth_dns']),
    'table ip berth_dns {',
    '  chain output {',
    '    type filter hook output priority raw; policy accept;',
    `    ip daddr ${a} udp dport 53 notrack udp dport set ${port}`,
    `    ip saddr ${a} udp sport ${port} notrack udp sport set 53`,
    `    ip daddr ${a} tcp dport 53 notrack tcp dport set ${port}`,
    `    ip saddr ${a} tcp sport ${port} notrack tcp sport set 53`,
    '  }',
    '}',
    '',
  ].join('\n');
}

export async function programSandboxRedirect(netnsPath: string, port: number, newNamespace = false): Promise<void> {
  await nftApply(sandboxRedirectRules(port, newNamespace), { netns: netnsPath });
}
