import { readFileSync } from 'node:fs';
import type { EtcFiles } from '../model/network.js';
import { boundingCapabilities, buildSpec, capabilitySet } from '../runtime/spec.js';
import { ociSeccomp, parseSecurityOpt } from '../runtime/seccomp.js';
import { ociMounts, parseTmpfs, type MountSpec } from './mounts.js';
import { ociResources, ociRlimits, type ProcessLimits, type Resources } from './resources.js';
import type { ContainerRecord } from './types.js';
import { resolveUser } from './users.js';

/** berthd's bounding set, read once: the capabilities a container can be given on this host. */
const AVAILABLE_CAPS = boundingCapabilities(readFileSync('/proc/self/status', 'utf8'));

/** The process environment Docker gives a container: the image's and the user's, plus PATH, HOSTNAME and TERM. */
function processEnv(c: ContainerRecord): string[] {
  const env = [...c.Config.Env];
  // Docker gives every container a PATH when neither the image nor the user set one.
  if (!env.some((e) => e.startsWith('PATH='))) env.unshift('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  if (!env.some((e) => e.startsWith('HOSTNAME='))) env.push(`HOSTNAME=${c.Config.Hostname}`);
  if (c.Config.Tty && !env.some((e) => e.startsWith('TERM='))) env.push('TERM=xterm');
  return env;
}

/** The OCI runtime spec for one run of a container, from its record and what its sandbox and mounts gave it. */
export async function runSpec(c: ContainerRecord, o: { rootfs: string; netnsPath?: string; etcFiles: EtcFiles; binds: MountSpec[] }): Promise<object> {
  const user = await resolveUser(o.rootfs, c.Config.User);
  const security = parseSecurityOpt((c.HostConfig as { SecurityOpt?: string[] | null }).SecurityOpt);
  const caps = capabilitySet(c.HostConfig.Privileged, c.HostConfig.CapAdd ?? [], c.HostConfig.CapDrop ?? [], AVAILABLE_CAPS);
  const limits = c.HostConfig as ProcessLimits;
  return buildSpec({
    args: [c.Path, ...c.Args], env: processEnv(c), cwd: c.Config.WorkingDir || '/', user, tty: c.Config.Tty,
    hostname: c.Config.Hostname, rootfs: o.rootfs, netnsPath: o.netnsPath, etcFiles: o.etcFiles,
    cgroupsPath: `/berth/${c.Id}`, privileged: c.HostConfig.Privileged,
    capabilities: caps,
    readonlyRootfs: c.HostConfig.ReadonlyRootfs,
    extraMounts: ociMounts([...o.binds, ...parseTmpfs((c.HostConfig as { Tmpfs?: Record<string, string> }).Tmpfs)]),
    resources: ociResources(c.HostConfig as Resources),
    rlimits: ociRlimits(limits),
    sysctl: limits.Sysctls ?? undefined,
    shmSize: limits.ShmSize ?? undefined,
    seccomp: ociSeccomp(security.seccomp, caps, c.HostConfig.Privileged),
    noNewPrivileges: security.noNewPrivileges,
  });
}
