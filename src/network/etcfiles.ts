import { promises as fs } from 'node:fs';
import { RESOLVER_ADDRESS } from '../model/network.js';
import { formatResolvConf, parseResolvConf, type ResolvConf } from '../util/resolvconf.js';

/** /etc/hosts, /etc/hostname and /etc/resolv.conf for one container, in Docker's layout. */

export interface HostsInput {
  hostname: string;
  domainname?: string;
  /** The container's addresses, each mapped to its hostname. */
  addresses: string[];
  extraHosts: string[];
}

export function hostsFile(input: HostsInput): string {
  const lines = [
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    'fe00::0\tip6-localnet',
    'ff00::0\tip6-mcastprefix',
    'ff02::1\tip6-allnodes',
    'ff02::2\tip6-allrouters',
  ];
  for (const h of input.extraHosts) {
    // --add-host takes NAME:IP (IPv6 addresses contain colons, so split at the first one).
    const i = h.indexOf(':');
    if (i > 0) lines.push(`${h.slice(i + 1)}\t${h.slice(0, i)}`);
  }
  const names = input.domainname ? `${input.hostname}.${input.domainname} ${input.hostname}` : input.hostname;
  for (const a of input.addresses) lines.push(`${a}\t${names}`);
  return lines.join('\n') + '\n';
}

function isLoopback(addr: string): boolean {
  return addr.startsWith('127.') || addr === '::1';
}

/**
 * A container without the embedded resolver gets the host's resolv.conf, minus loopback servers it
 * could not reach from its own namespace, with user overrides applied (Docker's legacy bridge rules).
 */
export async function containerResolvConf(opts: {
  hostResolvConf?: string; dns: string[]; dnsSearch: string[]; dnsOptions: string[]; shareHostNetwork: boolean;
  /** Use berth's resolver at Docker's address; --dns servers become its upstreams instead. */
  embeddedDns?: boolean;
}): Promise<string> {
  let hostText = '';
  try { hostText = await fs.readFile(opts.hostResolvConf ?? '/etc/resolv.conf', 'utf8'); } catch { /* none */ }
  const host = parseResolvConf(hostText);
  if (opts.embeddedDns) {
    const options = opts.dnsOptions.length ? opts.dnsOptions : host.options;
    return formatResolvConf({
      nameservers: [RESOLVER_ADDRESS],
      search: opts.dnsSearch.length ? opts.dnsSearch.filter((s) => s !== '.') : host.search,
      options: options.some((o) => o.startsWith('ndots:')) ? options : [...options, 'ndots:0'],
    });
  }
  const rc: ResolvConf = {
    nameservers: opts.dns.length ? opts.dns : host.nameservers.filter((n) => opts.shareHostNetwork || !isLoopback(n)),
    search: opts.dnsSearch.length ? opts.dnsSearch.filter((s) => s !== '.') : host.search,
    options: opts.dnsOptions.length ? opts.dnsOptions : host.options,
  };
  return formatResolvConf(rc);
}
