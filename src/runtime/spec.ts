/**
 * Builds the OCI runtime spec (config.json) that runc reads. Kept pure: everything it needs comes
 * in as data, so the result can be checked without a kernel.
 */

export interface ProcessUser { uid: number; gid: number; additionalGids?: number[] }

export interface SpecInput {
  args: string[];
  env: string[];
  cwd: string;
  user: ProcessUser;
  tty: boolean;
  hostname: string;
  rootfs: string;
  /** Path of the pinned network namespace, or undefined to share the daemon's (host mode). */
  netnsPath?: string;
  /** Files bind-mounted over /etc/hosts, /etc/hostname and /etc/resolv.conf. */
  etcFiles: { hosts: string; hostname: string; resolvConf: string };
  cgroupsPath: string;
  privileged: boolean;
  /** The process's capabilities (capabilitySet), also what its seccomp filter was made for. */
  capabilities: string[];
  readonlyRootfs: boolean;
  extraMounts?: OciMount[];
  /** LinuxResources other than devices: memory, cpu, pids, blockIO limits. */
  resources?: Record<string, unknown>;
  rlimits?: Array<{ type: string; soft: number; hard: number }>;
  sysctl?: Record<string, string>;
  /** Size of /dev/shm in bytes (Docker's default 64 MiB). */
  shmSize?: number;
  /** The container's seccomp filter (runtime/seccomp.ts), none when undefined. */
  seccomp?: object;
  noNewPrivileges?: boolean;
}

export interface OciMount { destination: string; type?: string; source: string; options?: string[] }

/** Docker's default capability set (moby oci/caps/defaults.go). */
export const DEFAULT_CAPS = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW',
  'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

const ALL_CAPS = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL',
  'CAP_SETGID', 'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER',
  'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

/**
 * The capabilities a process with this /proc/<pid>/status may pass on: its bounding set. ALL_CAPS
 * is in bit order. `--privileged` and `--cap-add ALL` get these, not every capability there is:
 * runc fails to start a container asking for one outside berthd's own bounding set ("unable to
 * apply caps"), as it does in a container or sandbox that dropped some.
 */
export function boundingCapabilities(status: string): string[] {
  const hex = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  if (!hex) return [...ALL_CAPS];
  const mask = BigInt(`0x${hex}`);
  return ALL_CAPS.filter((_c, bit) => (mask >> BigInt(bit)) & 1n);
}

export function normaliseCap(cap: string): string {
  const up = cap.toUpperCase();
  return up.startsWith('CAP_') ? up : `CAP_${up}`;
}

export function capabilitySet(privileged: boolean, add: string[], drop: string[], available: string[] = ALL_CAPS): string[] {
  if (privileged) return [...available];
  const adds = add.map(normaliseCap);
  const drops = drop.map(normaliseCap);
  let caps = adds.includes('CAP_ALL') ? [...available] : [...DEFAULT_CAPS, ...adds];
  if (drops.includes('CAP_ALL')) caps = adds.filter((c) => c !== 'CAP_ALL');
  else caps = caps.filter((c) => !drops.includes(c));
  return [...new Set(caps)];
}

export function buildSpec(input: SpecInput): object {
  const namespaces: Array<{ type: string; path?: string }> = [
    { type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' },
  ];
  if (input.netnsPath) namespaces.push({ type: 'network', path: input.netnsPath });

  const mounts: OciMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', `size=${input.shmSize ? Math.ceil(input.shmSize / 1024) : 65536}k`] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', input.privileged ? 'rw' : 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
    { destination: '/etc/resolv.conf', type: 'bind', source: input.etcFiles.resolvConf, options: ['rbind', 'rprivate'] },
    { destination: '/etc/hostname', type: 'bind', source: input.etcFiles.hostname, options: ['rbind', 'rprivate'] },
    { destination: '/etc/hosts', type: 'bind', source: input.etcFiles.hosts, options: ['rbind', 'rprivate'] },
    ...(input.extraMounts ?? []),
  ];

  const linux: Record<string, unknown> = {
    namespaces,
    cgroupsPath: input.cgroupsPath,
    resources: { ...(input.resources ?? {}), devices: [{ allow: input.privileged, access: 'rwm' }] },
  };
  if (input.sysctl && Object.keys(input.sysctl).length) linux.sysctl = input.sysctl;
  if (input.seccomp) linux.seccomp = input.seccomp;
  if (!input.privileged) {
    linux.maskedPaths = [
      '/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats',
      '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
      // Docker 25+ masks it: RAPL energy counters leak what other tenants compute (CVE-2020-8694 class).
      '/sys/devices/virtual/powercap',
    ];
    linux.readonlyPaths = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];
  }

  return {
    ociVersion: '1.0.2-dev',
    process: {
      terminal: input.tty,
      user: input.user,
      args: input.args,
      env: input.env,
      cwd: input.cwd || '/',
      capabilities: { bounding: input.capabilities, effective: input.capabilities, permitted: input.capabilities, inheritable: input.capabilities, ambient: [] },
      noNewPrivileges: input.noNewPrivileges ?? false,
      ...(input.rlimits?.length ? { rlimits: input.rlimits } : {}),
    },
    root: { path: input.rootfs, readonly: input.readonlyRootfs },
    hostname: input.hostname,
    mounts,
    linux,
  };
}
