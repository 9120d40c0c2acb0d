import { promises as fs } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { run, runOk } from '../../src/util/exec.js';

/** One call the plugin received: its method (NetworkDriver.Join …) and JSON body. */
export interface Recorded { method: string; body: any }

/**
 * A Docker network and IPAM plugin for tests, as moby's integration tests make them: an HTTP
 * server on a unix socket speaking the remote driver and IPAM protocols, recording every call.
 * Its networks are real: CreateNetwork makes a bridge holding the gateway address in the engine's
 * namespace (`netns`, a name under /run/netns), Join a veth pair there whose one end is on that
 * bridge and whose other end it names for the engine to move into the container. So containers on
 * one of its networks reach each other, and what the engine does with the interface is visible.
 */
export class FakePlugin {
  readonly calls: Recorded[] = [];
  /** Answer the next call of a method with HTTP 500 {"Err": text}. */
  readonly failNext = new Map<string, string>();
  /** Hold the answer to every call of a method this long. */
  readonly delay = new Map<string, number>();
  /** Name this interface in the next Join's SrcName instead of the veth it makes (a plugin gone wrong). */
  joinSrcName?: string;
  /** On the next call of this method: drop the connection unanswered and stop listening (the plugin dies). */
  dieOn?: string;
  readonly socket: string;
  private server?: Server;
  private readonly nets = new Map<string, { bridge: string; gateway: string }>();
  readonly endpoints = new Map<string, { net: string; address: string }>();
  /** IPAM: pool id → subnet base (a /24 or the given pool) and the addresses handed out. */
  readonly pools = new Map<string, { base: string; prefix: number; used: Set<string> }>();
  private nextPool = 0;

  constructor(readonly dir: string, readonly name: string, readonly netns: string, private readonly o: { implements?: string[]; scope?: string; poolBase?: number; requiresMac?: boolean } = {}) {
    this.socket = join(dir, `${name}.sock`);
  }

  async start(): Promise<void> {
    await fs.rm(this.socket, { force: true });
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socket, () => resolve());
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((r) => { s.close(() => r()); s.closeAllConnections(); });
    await fs.rm(this.socket, { force: true });
  }

  /** The methods received, in order. */
  methods(): string[] {
    return this.calls.map((c) => c.method);
  }

  /** Links the plugin made that are still in the namespace. */
  async links(): Promise<string[]> {
    const out = await runOk('ip', ['-n', this.netns, '-j', 'link', 'show']);
    return (JSON.parse(out || '[]') as Array<{ ifname: string }>).map((l) => l.ifname).filter((n) => /^fp[bhc]/.test(n));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const method = (req.url ?? '').replace(/^\//, '');
    let body: any = null;
    try { body = text.trim() ? JSON.parse(text) : null; } catch { body = text; }
    this.calls.push({ method, body });
    if (this.dieOn === method) {
      this.dieOn = undefined;
      req.socket.destroy();
      await this.stop();
      return;
    }
    const wait = this.delay.get(method);
    if (wait) await new Promise((r) => setTimeout(r, wait));
    const send = (status: number, v: unknown) => {
      const data = JSON.stringify(v);
      res.writeHead(status, { 'Content-Type': 'application/vnd.docker.plugins.v1+json', 'Content-Length': Buffer.byteLength(data) });
      res.end(data);
    };
    const fail = this.failNext.get(method);
    if (fail !== undefined) {
      this.failNext.delete(method);
      return send(500, { Err: fail });
    }
    try {
      const answer = await this.answer(method, body ?? {});
      if (answer === undefined) return send(404, { Err: `${method} not implemented` });
      send(200, answer);
    } catch (e) {
      send(500, { Err: (e as Error).message });
    }
  }

  private ip(args: string[]): Promise<string> {
    return runOk('ip', ['-n', this.netns, ...args]);
  }

  private async answer(method: string, b: any): Promise<unknown> {
    switch (method) {
      case 'Plugin.Activate': return { Implements: this.o.implements ?? ['NetworkDriver', 'IpamDriver'] };
      case 'NetworkDriver.GetCapabilities': return { Scope: this.o.scope ?? 'local', ConnectivityScope: this.o.scope ?? 'local' };
      case 'NetworkDriver.CreateNetwork': {
        const bridge = `fpb${String(b.NetworkID).slice(0, 8)}`;
        const gateway = String(b.IPv4Data?.[0]?.Gateway ?? '');
        await this.ip(['link', 'add', bridge, 'type', 'bridge']);
        if (gateway) await this.ip(['addr', 'add', gateway, 'dev', bridge]);
        await this.ip(['link', 'set', bridge, 'up']);
        this.nets.set(b.NetworkID, { bridge, gateway: gateway.split('/')[0]! });
        return {};
      }
      // What swarm managers ask of a global-scope plugin: its answer's Options become the network's.
      case 'NetworkDriver.AllocateNetwork': return { Options: { ...(b.Options ?? {}), 'fake.allocated': `vni-${String(b.NetworkID).slice(0, 4)}` } };
      case 'NetworkDriver.FreeNetwork': return {};
      case 'NetworkDriver.DeleteNetwork': {
        const n = this.nets.get(b.NetworkID);
        if (n) await this.ip(['link', 'del', n.bridge]);
        this.nets.delete(b.NetworkID);
        return {};
      }
      case 'NetworkDriver.CreateEndpoint':
        if (!this.nets.has(b.NetworkID)) throw new Error(`no network ${b.NetworkID}`);
        this.endpoints.set(b.EndpointID, { net: b.NetworkID, address: b.Interface?.Address ?? '' });
        return {};
      case 'NetworkDriver.Join': {
        const ep = this.endpoints.get(b.EndpointID);
        const n = ep && this.nets.get(ep.net);
        if (!ep || !n) throw new Error(`no endpoint ${b.EndpointID}`);
        const id = String(b.EndpointID).slice(0, 8);
        await this.ip(['link', 'add', `fph${id}`, 'type', 'veth', 'peer', 'name', `fpc${id}`]);
        await this.ip(['link', 'set', `fph${id}`, 'master', n.bridge, 'up']);
        const src = this.joinSrcName ?? `fpc${id}`;
        this.joinSrcName = undefined;
        return { InterfaceName: { SrcName: src, DstPrefix: 'eth' }, Gateway: n.gateway, StaticRoutes: [{ Destination: '10.123.0.0/16', RouteType: 0, NextHop: n.gateway }] };
      }
      case 'NetworkDriver.Leave': return {};
      case 'NetworkDriver.DeleteEndpoint': {
        await run('ip', ['-n', this.netns, 'link', 'del', `fph${String(b.EndpointID).slice(0, 8)}`]);
        this.endpoints.delete(b.EndpointID);
        return {};
      }
      case 'NetworkDriver.EndpointOperInfo': return { Value: {} };
      case 'NetworkDriver.ProgramExternalConnectivity':
      case 'NetworkDriver.RevokeExternalConnectivity':
      case 'NetworkDriver.DiscoverNew':
      case 'NetworkDriver.DiscoverDelete':
        return {};
      case 'IpamDriver.GetCapabilities': return { RequiresMACAddress: !!this.o.requiresMac };
      case 'IpamDriver.GetDefaultAddressSpaces': return { LocalDefaultAddressSpace: 'FakeLocal', GlobalDefaultAddressSpace: 'FakeGlobal' };
      case 'IpamDriver.RequestPool': {
        const pool = b.Pool || `10.${this.o.poolBase ?? 77}.${this.nextPool++}.0/24`;
        const [base, prefix] = pool.split('/');
        const id = `${b.AddressSpace}/${pool}`;
        if (this.pools.has(id)) throw new Error(`pool ${pool} overlaps`);
        this.pools.set(id, { base, prefix: Number(prefix), used: new Set() });
        return { PoolID: id, Pool: pool, Data: {} };
      }
      case 'IpamDriver.ReleasePool':
        if (!this.pools.delete(b.PoolID)) throw new Error(`no pool ${b.PoolID}`);
        return {};
      case 'IpamDriver.RequestAddress': {
        const p = this.pools.get(b.PoolID);
        if (!p) throw new Error(`no pool ${b.PoolID}`);
        const prefix3 = p.base.split('.').slice(0, 3).join('.');
        let ip = b.Address as string;
        if (!ip) {
          const first = b.Options?.RequestAddressType === 'com.docker.network.gateway' ? 1 : 2;
          for (let i = first; i < 255 && !ip; i++) if (!p.used.has(`${prefix3}.${i}`)) ip = `${prefix3}.${i}`;
        } else if (p.used.has(ip)) {
          throw new Error(`address ${ip} already in use`);
        }
        p.used.add(ip);
        return { Address: `${ip}/${p.prefix}`, Data: {} };
      }
      case 'IpamDriver.ReleaseAddress': {
        const p = this.pools.get(b.PoolID);
        if (!p?.used.delete(b.Address)) throw new Error(`address ${b.Address} not allocated`);
        return {};
      }
      default: return undefined;
    }
  }
}
