import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { EtcFiles, SandboxSpec } from '../model/network.js';
import { containerResolvConf, hostsFile } from './etcfiles.js';

/** Where a sandbox's files are: the container's own directory, bind-mounted into it by the runtime. */
export function etcFilesIn(dir: string): EtcFiles {
  return { hosts: join(dir, 'hosts'), hostname: join(dir, 'hostname'), resolvConf: join(dir, 'resolv.conf') };
}

/** A container's resolv.conf: the host's, or berth's resolver when a network of it has one. */
export function sandboxResolvConf(spec: SandboxSpec, shareHostNetwork: boolean, embeddedDns: boolean, hostResolvConf?: string): Promise<string> {
  return containerResolvConf({
    dns: spec.dns.servers, dnsSearch: spec.dns.search, dnsOptions: spec.dns.options,
    shareHostNetwork, embeddedDns, ...(hostResolvConf ? { hostResolvConf } : {}),
  });
}

/** Writes /etc/hosts, /etc/hostname and /etc/resolv.conf for a sandbox, in Docker's layout. */
export async function writeSandboxFiles(spec: SandboxSpec, o: { addresses: string[]; shareHostNetwork: boolean; embeddedDns: boolean; hostResolvConf?: string }): Promise<EtcFiles> {
  const files = etcFilesIn(spec.etcDir);
  let hosts: string;
  if (o.shareHostNetwork) {
    hosts = await fs.readFile('/etc/hosts', 'utf8').catch(() => hostsFile({ hostname: spec.hostname, addresses: [], extraHosts: [] }));
    for (const h of spec.extraHosts) {
      const i = h.indexOf(':');
      if (i > 0) hosts += `${h.slice(i + 1)}\t${h.slice(0, i)}\n`;
    }
  } else {
    hosts = hostsFile({ hostname: spec.hostname, domainname: spec.domainname, addresses: o.addresses, extraHosts: [...spec.extraHosts, ...spec.linkHosts] });
  }
  const resolv = await sandboxResolvConf(spec, o.shareHostNetwork, o.embeddedDns, o.hostResolvConf);
  await Promise.all([
    fs.writeFile(files.hosts, hosts),
    fs.writeFile(files.hostname, `${spec.hostname}\n`),
    fs.writeFile(files.resolvConf, resolv),
  ]);
  return files;
}
