import { release } from 'node:os';
import { BadRequestError } from '../util/errors.js';

/**
 * `--security-opt` (HostConfig.SecurityOpt) and the seccomp filter a container gets. Docker applies
 * a default seccomp profile to every container that is not privileged; berth's is written from the
 * behaviour Docker documents (docs.docker.com/engine/security/seccomp): every system call is
 * allowed except those below, which fail with EPERM unless the container holds the capability that
 * Docker's profile ties them to. Most of them already need that capability; the filter matters for
 * the ones the kernel lets any process make (keyrings, which are not namespaced; user namespaces
 * through unshare and clone; userfaultfd; perf_event_open), and as a second wall for the rest.
 */

export type SeccompChoice = { kind: 'default' } | { kind: 'unconfined' } | { kind: 'profile'; profile: DockerSeccompProfile };

export interface SecurityOptions {
  seccomp: SeccompChoice;
  noNewPrivileges: boolean;
}

/** Docker's profile file format (what `docker run --security-opt seccomp=FILE` sends as JSON). */
export interface DockerSeccompProfile {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  archMap?: Array<{ architecture: string; subArchitectures?: string[] }>;
  syscalls?: Array<{
    names?: string[];
    name?: string;
    action: string;
    errnoRet?: number;
    args?: Array<{ index: number; value: number; valueTwo?: number; op: string }>;
    includes?: { caps?: string[]; arches?: string[]; minKernel?: string };
    excludes?: { caps?: string[]; arches?: string[]; minKernel?: string };
  }>;
}

/** Parses SecurityOpt as Docker's daemon does; Docker's own messages for bad entries. */
export function parseSecurityOpt(opts: string[] | null | undefined): SecurityOptions {
  const out: SecurityOptions = { seccomp: { kind: 'default' }, noNewPrivileges: false };
  for (const opt of opts ?? []) {
    if (opt === 'no-new-privileges') { out.noNewPrivileges = true; continue; }
    const eq = opt.indexOf('=');
    const colon = opt.indexOf(':');
    const at = eq >= 0 ? eq : colon;
    if (at < 0) throw new BadRequestError(`invalid --security-opt 1: ${JSON.stringify(opt)}`);
    const key = opt.slice(0, at);
    const value = opt.slice(at + 1);
    switch (key) {
      case 'seccomp':
        out.seccomp = value === 'unconfined' ? { kind: 'unconfined' } : { kind: 'profile', profile: parseProfile(value) };
        break;
      case 'no-new-privileges':
        if (!['true', 'false', '1', '0', 't', 'f', 'TRUE', 'FALSE', 'True', 'False'].includes(value)) {
          throw new BadRequestError(`invalid --security-opt 2: ${JSON.stringify(opt)}`);
        }
        out.noNewPrivileges = ['true', '1', 't', 'TRUE', 'True'].includes(value);
        break;
      case 'apparmor':
      case 'label':
        // No AppArmor or SELinux on berth's hosts: accepted, as Docker accepts them where the
        // host has neither, and without effect.
        break;
      default:
        throw new BadRequestError(`invalid --security-opt 2: ${JSON.stringify(opt)}`);
    }
  }
  return out;
}

function parseProfile(text: string): DockerSeccompProfile {
  let p: unknown;
  try {
    p = JSON.parse(text);
  } catch (e) {
    throw new BadRequestError(`Decoding seccomp profile failed: ${(e as Error).message}`);
  }
  const profile = p as DockerSeccompProfile;
  if (typeof p !== 'object' || p === null || typeof profile.defaultAction !== 'string' || (profile.syscalls !== undefined && !Array.isArray(profile.syscalls))) {
    throw new BadRequestError('Decoding seccomp profile failed: expected an object with defaultAction and syscalls');
  }
  return profile;
}

const EPERM = 1;
const ENOSYS = 38;

/** System calls Docker's default profile refuses, and the capability that lets a container make them anyway. */
const DENIED_UNLESS: Record<string, string[]> = {
  CAP_SYS_ADMIN: [
    'bpf', 'fanotify_init', 'lookup_dcookie', 'mount', 'mount_setattr', 'move_mount', 'fsconfig', 'fsmount',
    'fsopen', 'fspick', 'open_tree', 'name_to_handle_at', 'perf_event_open', 'pivot_root', 'quotactl',
    'setns', 'swapon', 'swapoff', 'umount', 'umount2', 'unshare', 'vm86', 'vm86old',
  ],
  CAP_SYS_BOOT: ['kexec_file_load', 'kexec_load', 'reboot'],
  CAP_SYS_MODULE: ['create_module', 'delete_module', 'finit_module', 'get_kernel_syms', 'init_module', 'query_module'],
  CAP_SYS_NICE: ['get_mempolicy', 'mbind', 'move_pages', 'set_mempolicy'],
  CAP_SYS_PACCT: ['acct'],
  CAP_SYS_PTRACE: ['userfaultfd'],
  CAP_SYS_RAWIO: ['ioperm', 'iopl'],
  CAP_SYS_TIME: ['adjtimex', 'clock_adjtime', 'clock_adjtime64', 'clock_settime', 'clock_settime64', 'settimeofday', 'stime'],
  CAP_SYSLOG: ['syslog'],
  CAP_DAC_READ_SEARCH: ['open_by_handle_at'],
};

/** Refused whatever the capabilities: the kernel keyring is not namespaced; the rest is obsolete. */
const DENIED_ALWAYS = ['add_key', 'keyctl', 'request_key', 'nfsservctl', 'sysfs', '_sysctl', 'uselib', 'ustat'];

/** Namespace flags of clone(2): new namespaces only with CAP_SYS_ADMIN. */
const CLONE_NAMESPACE_FLAGS = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000];

function architectures(): string[] | undefined {
  if (process.arch === 'x64') return ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'];
  if (process.arch === 'arm64') return ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'];
  return undefined;
}

/** The OCI `linux.seccomp` for a container with these capabilities, or undefined for none. */
export function ociSeccomp(choice: SeccompChoice, caps: string[], privileged: boolean): object | undefined {
  if (privileged || choice.kind === 'unconfined') return undefined;
  if (choice.kind === 'profile') return fromDockerProfile(choice.profile, caps);
  const has = new Set(caps);
  const denied = [...DENIED_ALWAYS];
  for (const [cap, names] of Object.entries(DENIED_UNLESS)) if (!has.has(cap)) denied.push(...names);
  const syscalls: object[] = [{ names: denied, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM }];
  if (!has.has('CAP_SYS_ADMIN')) {
    // clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall back to clone.
    syscalls.push({ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS });
    const flagsArg = process.arch === 's390x' ? 1 : 0;
    for (const flag of CLONE_NAMESPACE_FLAGS) {
      syscalls.push({ names: ['clone'], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, args: [{ index: flagsArg, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }] });
    }
  }
  const arches = architectures();
  return { defaultAction: 'SCMP_ACT_ALLOW', ...(arches ? { architectures: arches } : {}), syscalls };
}

const ARCH_NAMES: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', s390x: 's390x', ppc64: 'ppc64le' };

function kernelAtLeast(min: string): boolean {
  const have = release().split(/[.-]/).map((n) => Number.parseInt(n, 10));
  const want = min.split('.').map((n) => Number.parseInt(n, 10));
  for (let i = 0; i < want.length; i++) {
    if ((have[i] ?? 0) !== want[i]) return (have[i] ?? 0) > (want[i] ?? 0);
  }
  return true;
}

/** A profile in Docker's format as runc takes it: entries filtered by capability, arch and kernel. */
function fromDockerProfile(p: DockerSeccompProfile, caps: string[]): object {
  const arch = ARCH_NAMES[process.arch] ?? process.arch;
  const has = (list: string[] | undefined, set: string[]) => (list ?? []).every((x) => set.includes(x));
  const any = (list: string[] | undefined, set: string[]) => (list ?? []).some((x) => set.includes(x));
  const native = architectures()?.[0];
  const mapped = p.archMap?.find((m) => m.architecture === native);
  const arches = p.architectures?.length ? p.architectures : mapped ? [mapped.architecture, ...(mapped.subArchitectures ?? [])] : undefined;
  const syscalls = (p.syscalls ?? []).filter((s) => {
    if (s.includes?.caps && !has(s.includes.caps, caps)) return false;
    if (s.includes?.arches && !s.includes.arches.includes(arch)) return false;
    if (s.includes?.minKernel && !kernelAtLeast(s.includes.minKernel)) return false;
    if (any(s.excludes?.caps, caps)) return false;
    if (s.excludes?.arches?.includes(arch)) return false;
    return true;
  }).map((s) => ({
    names: s.names ?? (s.name ? [s.name] : []),
    action: s.action,
    ...(s.errnoRet !== undefined ? { errnoRet: s.errnoRet } : {}),
    ...(s.args?.length ? { args: s.args.map((a) => ({ index: a.index, value: a.value, valueTwo: a.valueTwo ?? 0, op: a.op })) } : {}),
  }));
  return {
    defaultAction: p.defaultAction,
    ...(p.defaultErrnoRet !== undefined ? { defaultErrnoRet: p.defaultErrnoRet } : {}),
    ...(arches ? { architectures: arches } : {}),
    syscalls,
  };
}
