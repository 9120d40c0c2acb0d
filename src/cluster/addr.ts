import { isIPv4, isIP } from 'node:net';
import { ipJson } from '../kernel/netns.js';
import { invalid, UnavailableError } from './errors.js';

/**
 * Docker's address rules for init and join (daemon/cluster/listen_addr.go): an address or an
 * interface name, with an optional port; the advertise address found from the system when not
 * given. Links berth made itself (its bridges, veths) are never candidates.
 */

export const DEFAULT_PORT = 2377;

interface Link { ifname: string; addr_info?: Array<{ family: string; local: string; scope: string }> }

async function links(): Promise<Link[]> {
  return (await ipJson<Link[]>(undefined, ['addr', 'show'])) ?? [];
}

function berthLink(name: string): boolean {
  return name === 'lo' || name.startsWith('berth') || name.startsWith('br-') || name.startsWith('veth');
}

function splitHostPort(s: string): { host: string; port?: number } {
  const m = /^\[?([^\]]*?)\]?(?::(\d+))?$/.exec(s);
  if (!m || isIP(s)) return { host: s };
  return { host: m[1]!, ...(m[2] ? { port: Number(m[2]) } : {}) };
}

/** An IP, or the single IPv4 address of the named interface. */
async function resolveHost(host: string, what: string): Promise<string> {
  if (isIP(host)) return host;
  const l = (await links()).find((x) => x.ifname === host);
  if (!l) throw invalid(`${what} address must be an IP address or network interface (with optional port number)`);
  const v4 = (l.addr_info ?? []).filter((a) => a.family === 'inet' && a.scope === 'global');
  if (v4.length === 0) throw invalid(`interface ${host} has no usable IPv4 address`);
  if (v4.length > 1) throw invalid(`interface ${host} has more than one IPv4 address (${v4.map((a) => a.local).join(' and ')})`);
  return v4[0]!.local;
}

export async function resolveListen(raw: string | undefined): Promise<{ host: string; port: number }> {
  const { host, port } = splitHostPort(raw || `0.0.0.0:${DEFAULT_PORT}`);
  return { host: host === '' || host === '0.0.0.0' ? '0.0.0.0' : await resolveHost(host, 'listen'), port: port ?? DEFAULT_PORT };
}

/** The address other nodes reach this one at: given, else the listen address, else the system's one. */
export async function resolveAdvertise(raw: string | undefined, listen: { host: string; port: number }): Promise<{ host: string; port: number }> {
  if (raw) {
    const { host, port } = splitHostPort(raw);
    return { host: await resolveHost(host, 'advertise'), port: port ?? listen.port };
  }
  if (listen.host !== '0.0.0.0') return listen;
  const candidates = (await links())
    .filter((l) => !berthLink(l.ifname))
    .flatMap((l) => (l.addr_info ?? []).filter((a) => a.family === 'inet' && a.scope === 'global' && isIPv4(a.local)).map((a) => ({ ifname: l.ifname, ip: a.local })));
  if (candidates.length === 0) throw new UnavailableError("could not find the system's IP address - specify one with --advertise-addr");
  if (candidates.length > 1) {
    throw invalid(`could not choose an IP address to advertise since this system has multiple addresses on different interfaces (${candidates.map((c) => `${c.ip} on ${c.ifname}`).join(' and ')})`);
  }
  return { host: candidates[0]!.ip, port: listen.port };
}

/**
 * berth's members listen on the address they advertise (no NAT between managers): an advertised
 * address that is not this host's needs an explicit listen address, as Docker says when it cannot
 * pick one itself (daemon/cluster errMustSpecifyListenAddr).
 */
export async function checkLocal(advertise: string, listen: string): Promise<void> {
  if (listen !== '0.0.0.0') return;
  const mine = (await links()).flatMap((l) => (l.addr_info ?? []).map((a) => a.local));
  if (!mine.includes(advertise)) {
    throw invalid('must specify a listening address because the address to advertise is not recognized as a system address, and a system\'s IP address to use could not be uniquely identified');
  }
}

export async function resolveDataPath(raw: string | undefined, advertise: string): Promise<string> {
  return raw ? resolveHost(raw, 'data path') : advertise;
}
