import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { BadRequestError } from '../util/errors.js';
import { canonicalIPv6 } from './ipam6.js';
import type { PortMapping } from '../model/network.js';

export type { PortMapping };


/**
 * `family` says which host addresses: 4 or 6 only, or `both` when the user named none (Docker
 * then listens on 0.0.0.0 and ::; the IPv6 side exists only for containers with IPv6).
 */
export interface PortRequest { proto: PortMapping['proto']; hostIp: string; hostPorts: [number, number] | undefined; containerPort: number; family: 4 | 6 | 'both' }

/** Where a container's published ports lead: its address on the publishing network, and its IPv6 one if any. */
export interface PublishTarget { ip: string; ip6?: string }

type Holder = { close: () => void };

/** Parses a HostConfig.PortBindings key and entry ("80/tcp", {HostIp, HostPort "8080" or "8000-8005" or ""}). */
export function portRequests(bindings: Record<string, Array<{ HostIp?: string; HostPort?: string }> | null>, defaultHostIp = ''): PortRequest[] {
  const out: PortRequest[] = [];
  for (const [key, list] of Object.entries(bindings ?? {})) {
    const m = /^(\d+)(?:\/(tcp|udp|sctp))?$/.exec(key);
    if (!m) throw new BadRequestError(`invalid port specification: "${key}"`);
    const containerPort = Number(m[1]);
    const proto = (m[2] ?? 'tcp') as PortMapping['proto'];
    if (containerPort < 1 || containerPort > 65535) throw new BadRequestError(`invalid port specification: "${key}"`);
    for (const b of list ?? [{}]) {
      const hp = (b.HostPort ?? '').trim();
      let hostPorts: [number, number] | undefined;
      if (hp !== '' && hp !== '0') {
        const r = /^(\d+)(?:-(\d+))?$/.exec(hp);
        if (!r) throw new BadRequestError(`invalid port specification: "${hp}"`);
        hostPorts = [Number(r[1]), Number(r[2] ?? r[1])];
        if (hostPorts[0] < 1 || hostPorts[1] > 65535 || hostPorts[0] > hostPorts[1]) throw new BadRequestError(`invalid port range: "${hp}"`);
      }
      const given = (b.HostIp ?? '').replace(/^\[(.*)\]$/, '$1');
      const hostIp = given || defaultHostIp;
      if (hostIp === '') {
        out.push({ proto, hostIp: '', hostPorts, containerPort, family: 'both' });
      } else if (/^\d+\.\d+\.\d+\.\d+$/.test(hostIp)) {
        out.push({ proto, hostIp: hostIp === '0.0.0.0' ? '' : hostIp, hostPorts, containerPort, family: 4 });
      } else if (hostIp.includes(':')) {
        let v6: string;
        try {
          v6 = canonicalIPv6(hostIp);
        } catch {
          throw new BadRequestError(`invalid host IP address: "${hostIp}"`);
        }
        // The kernel never routes ::1 off the host, so no NAT can take it to a container; Docker
        // needs its userland proxy for this, which berth does not have.
        if (v6 === '::1' || v6.startsWith('::ffff:')) throw new BadRequestError(`cannot publish on ${hostIp}: berth publishes with kernel NAT, which cannot forward IPv6 loopback or IPv4-mapped addresses`);
        out.push({ proto, hostIp: v6 === '::' ? '' : v6, hostPorts, containerPort, family: 6 });
      } else {
        throw new BadRequestError(`invalid host IP address: "${hostIp}"`);
      }
    }
  }
  return out;
}

/**
 * Reserves host ports the way Docker does: by binding them. The sockets never see traffic (the
 * kernel DNATs it first), but holding them means no other process can take the port, and a port
 * another process already holds fails here, before anything is published.
 */
export class PortReservations {
  private readonly held = new Map<string, Array<{ mapping: PortMapping; holder: Holder }>>();
  /** Ports berth itself holds now (proto/family/port), from the bind on: a reservation in flight counts. */
  private readonly ours = new Map<string, number>();

  mappings(): PortMapping[] {
    return [...this.held.values()].flat().map((h) => h.mapping);
  }

  mappingsOf(owner: string): PortMapping[] {
    return (this.held.get(owner) ?? []).map((h) => h.mapping);
  }

  /** Binds every requested port for `owner`, or none: on any failure, everything taken is released. */
  async reserve(owner: string, requests: PortRequest[], target: PublishTarget): Promise<PortMapping[]> {
    const taken: Array<{ mapping: PortMapping; holder: Holder }> = [];
    try {
      for (const r of requests) {
        if (r.family === 6 && !target.ip6) {
          throw Object.assign(new Error(`cannot publish [${r.hostIp || '::'}] for port ${r.containerPort}/${r.proto}: the container has no IPv6 address (its network was not created with --ipv6)`), { status: 400 });
        }
        let port: number | undefined;
        if (r.family !== 6) {
          const got = await this.bindOne(r, 4);
          port = got.port;
          taken.push({ holder: got.holder, mapping: { proto: r.proto, hostIp: r.hostIp, hostPort: got.port, containerIp: target.ip, containerPort: r.containerPort } });
        }
        if (r.family !== 4 && target.ip6) {
          // The IPv6 side takes the very port the IPv4 side got, as Docker's two listeners do.
          const got = await this.bindOne(port === undefined ? r : { ...r, hostPorts: [port, port] }, 6);
          taken.push({ holder: got.holder, mapping: { proto: r.proto, hostIp: r.hostIp, hostPort: got.port, containerIp: target.ip6, containerPort: r.containerPort, family: 6 } });
        }
      }
    } catch (e) {
      for (const t of taken) t.holder.close();
      throw e;
    }
    this.held.set(owner, [...(this.held.get(owner) ?? []), ...taken]);
    return taken.map((t) => t.mapping);
  }

  release(owner: string): PortMapping[] {
    const list = this.held.get(owner) ?? [];
    for (const h of list) h.holder.close();
    this.held.delete(owner);
    return list.map((h) => h.mapping);
  }

  private async bindOne(r: PortRequest, family: 4 | 6): Promise<{ port: number; holder: Holder }> {
    const candidates = r.hostPorts ? range(r.hostPorts[0], r.hostPorts[1]) : [0];
    const host = r.hostIp || (family === 6 ? '::' : '0.0.0.0');
    let last: Error | undefined;
    for (const port of candidates) {
      try {
        const got = await bindPort(r.proto, host, port, family);
        const key = `${r.proto}/${family}/${got.port}`;
        this.ours.set(key, (this.ours.get(key) ?? 0) + 1);
        let open = true;
        return {
          port: got.port,
          holder: {
            close: () => {
              if (!open) return;
              open = false;
              const n = (this.ours.get(key) ?? 1) - 1;
              if (n > 0) this.ours.set(key, n); else this.ours.delete(key);
              got.holder.close();
            },
          },
        };
      } catch (e) {
        last = e as Error;
      }
    }
    const ports = r.hostPorts ? (r.hostPorts[0] === r.hostPorts[1] ? r.hostPorts[0] : `${r.hostPorts[0]}-${r.hostPorts[1]}`) : 0;
    const where = family === 6 ? `[${host}]:${ports}` : `${host}:${ports}`;
    // Docker's two wordings: a port another container holds is "already allocated" (its port
    // allocator), one another process holds fails in the userland proxy's bind.
    const allocated = r.hostPorts && r.hostPorts[0] === r.hostPorts[1] && this.ours.has(`${r.proto}/${family}/${r.hostPorts[0]}`);
    const heldBy = allocated ? this.ownerOf(r.proto, family, r.hostPorts![0]) : undefined;
    const err = new Error(allocated
      ? `driver failed programming external connectivity on endpoint: Bind for ${where} failed: port is already allocated`
      : `driver failed programming external connectivity on endpoint: Error starting userland proxy: listen ${r.proto}${family} ${where}: bind: address already in use`);
    if (last && !/EADDRINUSE/.test(last.message)) err.message = `cannot publish ${where}/${r.proto}: ${last.message}`;
    throw Object.assign(err, { status: 500 }, heldBy ? { heldBy } : {});
  }

  private ownerOf(proto: PortMapping['proto'], family: 4 | 6, port: number): string | undefined {
    for (const [owner, list] of this.held) {
      if (list.some((h) => h.mapping.proto === proto && (h.mapping.family ?? 4) === family && h.mapping.hostPort === port)) return owner;
    }
    return undefined;
  }
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

function bindPort(proto: PortMapping['proto'], host: string, port: number, family: 4 | 6): Promise<{ port: number; holder: Holder }> {
  if (proto === 'sctp') {
    // Node cannot hold an SCTP socket; the port is published without a reservation.
    if (port === 0) return Promise.reject(new Error('an SCTP port needs an explicit host port'));
    return Promise.resolve({ port, holder: { close: () => {} } });
  }
  if (proto === 'udp') {
    return new Promise((resolve, reject) => {
      const s: UdpSocket = createSocket(family === 6 ? { type: 'udp6', ipv6Only: true } : { type: 'udp4' });
      s.once('error', (e) => { s.close(); reject(e); });
      s.bind({ address: host, port, exclusive: true }, () => {
        s.removeAllListeners('error');
        s.on('error', () => {});
        resolve({ port: s.address().port, holder: { close: () => { try { s.close(); } catch { /* closed */ } } } });
      });
    });
  }
  return new Promise((resolve, reject) => {
    const srv: Server = createServer((c) => c.destroy());
    srv.once('error', reject);
    // No backlog worth the name: the socket only reserves the port.
    srv.listen({ host, port, exclusive: true, backlog: 1, ipv6Only: family === 6 }, () => {
      srv.removeAllListeners('error');
      const addr = srv.address();
      resolve({ port: typeof addr === 'object' && addr ? addr.port : port, holder: { close: () => srv.close() } });
    });
  });
}
