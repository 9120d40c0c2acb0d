import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { BadRequestError } from '../util/errors.js';

/** One published port: traffic to hostIp:hostPort/proto goes to containerIp:containerPort. */
export interface PortMapping {
  proto: 'tcp' | 'udp' | 'sctp';
  /** '' (or 0.0.0.0) for every host address. */
  hostIp: string;
  hostPort: number;
  containerIp: string;
  containerPort: number;
}

export interface PortRequest { proto: PortMapping['proto']; hostIp: string; hostPorts: [number, number] | undefined; containerPort: number }

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
      const hostIp = (b.HostIp ?? '') || defaultHostIp;
      if (hostIp && !/^\d+\.\d+\.\d+\.\d+$/.test(hostIp)) throw new BadRequestError(`berth publishes IPv4 host addresses only for now: "${hostIp}"`);
      out.push({ proto, hostIp: hostIp === '0.0.0.0' ? '' : hostIp, hostPorts, containerPort });
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

  mappings(): PortMapping[] {
    return [...this.held.values()].flat().map((h) => h.mapping);
  }

  mappingsOf(owner: string): PortMapping[] {
    return (this.held.get(owner) ?? []).map((h) => h.mapping);
  }

  /** Binds every requested port for `owner`, or none: on any failure, everything taken is released. */
  async reserve(owner: string, requests: PortRequest[], containerIp: string): Promise<PortMapping[]> {
    const taken: Array<{ mapping: PortMapping; holder: Holder }> = [];
    try {
      for (const r of requests) {
        const { port, holder } = await this.bindOne(r);
        taken.push({ holder, mapping: { proto: r.proto, hostIp: r.hostIp, hostPort: port, containerIp, containerPort: r.containerPort } });
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

  private async bindOne(r: PortRequest): Promise<{ port: number; holder: Holder }> {
    const candidates = r.hostPorts ? range(r.hostPorts[0], r.hostPorts[1]) : [0];
    let last: Error | undefined;
    for (const port of candidates) {
      try {
        return await bindPort(r.proto, r.hostIp || '0.0.0.0', port);
      } catch (e) {
        last = e as Error;
      }
    }
    const where = `${r.hostIp || '0.0.0.0'}:${r.hostPorts ? (r.hostPorts[0] === r.hostPorts[1] ? r.hostPorts[0] : `${r.hostPorts[0]}-${r.hostPorts[1]}`) : 0}`;
    const err = new Error(`driver failed programming external connectivity on endpoint: Error starting userland proxy: listen ${r.proto}4 ${where}: bind: address already in use`);
    if (last && !/EADDRINUSE/.test(last.message)) err.message = `cannot publish ${where}/${r.proto}: ${last.message}`;
    throw Object.assign(err, { status: 500 });
  }
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

function bindPort(proto: PortMapping['proto'], host: string, port: number): Promise<{ port: number; holder: Holder }> {
  if (proto === 'sctp') {
    // Node cannot hold an SCTP socket; the port is published without a reservation.
    if (port === 0) return Promise.reject(new Error('an SCTP port needs an explicit host port'));
    return Promise.resolve({ port, holder: { close: () => {} } });
  }
  if (proto === 'udp') {
    return new Promise((resolve, reject) => {
      const s: UdpSocket = createSocket('udp4');
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
    srv.listen({ host, port, exclusive: true, backlog: 1 }, () => {
      srv.removeAllListeners('error');
      const addr = srv.address();
      resolve({ port: typeof addr === 'object' && addr ? addr.port : port, holder: { close: () => srv.close() } });
    });
  });
}
