/**
 * `run` and `create` flags, spelled as docker spells them, turned into the body of
 * POST /containers/create. Kept free of I/O (but for --env-file) so it can be tested alone.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';

export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export class FlagError extends Error {
  override name = 'FlagError';
}

export interface ContainerFlags {
  detach?: boolean;
  interactive?: boolean;
  tty?: boolean;
  name?: string;
  rm?: boolean;
  env: string[];
  envFile: string[];
  workdir?: string;
  entrypoint?: string;
  hostname?: string;
  domainname?: string;
  user?: string;
  label: string[];
  network?: string;
  networkAlias: string[];
  ip?: string;
  ip6?: string;
  macAddress?: string;
  publish: string[];
  publishAll?: boolean;
  expose: string[];
  dns: string[];
  dnsSearch: string[];
  dnsOption: string[];
  addHost: string[];
  link: string[];
  privileged?: boolean;
  readOnly?: boolean;
  restart?: string;
  capAdd: string[];
  capDrop: string[];
  securityOpt: string[];
  stopSignal?: string;
  stopTimeout?: string;
  volume?: string[];
  tmpfs?: string[];
  memory?: string;
  cpus?: string;
  pidsLimit?: string;
}

/** Declares the flags on a command (run and create share them). */
export function addContainerFlags(cmd: Command, withRunOnly: boolean): Command {
  if (withRunOnly) {
    cmd.option('-d, --detach', 'Run container in background and print container ID');
    cmd.option('--rm', 'Automatically remove the container when it exits');
  } else {
    cmd.option('--rm', 'Automatically remove the container when it exits');
  }
  return cmd
    .option('-i, --interactive', 'Keep STDIN open even if not attached')
    .option('-t, --tty', 'Allocate a pseudo-TTY')
    .option('--name <string>', 'Assign a name to the container')
    .option('-e, --env <list>', 'Set environment variables', collect, [])
    .option('--env-file <file>', 'Read in a file of environment variables', collect, [])
    .option('-w, --workdir <string>', 'Working directory inside the container')
    .option('--entrypoint <string>', 'Overwrite the default ENTRYPOINT of the image')
    .option('-h, --hostname <string>', 'Container host name')
    .option('--domainname <string>', 'Container NIS domain name')
    .option('-u, --user <string>', 'Username or UID (format: <name|uid>[:<group|gid>])')
    .option('-l, --label <list>', 'Set meta data on a container', collect, [])
    .option('--net, --network <network>', 'Connect a container to a network')
    .option('--alias, --network-alias <list>', 'Add network-scoped alias for the container', collect, [])
    .option('--ip <string>', 'IPv4 address (e.g., 172.30.100.104)')
    .option('--ip6 <string>', 'IPv6 address (e.g., 2001:db8::33)')
    .option('--mac-address <string>', 'Container MAC address (e.g., 92:d0:c6:0a:29:33)')
    .option('-p, --publish <list>', "Publish a container's port(s) to the host", collect, [])
    .option('-P, --publish-all', 'Publish all exposed ports to random ports')
    .option('--expose <list>', 'Expose a port or a range of ports', collect, [])
    .option('--dns <list>', 'Set custom DNS servers', collect, [])
    .option('--dns-search <list>', 'Set custom DNS search domains', collect, [])
    .option('--dns-opt, --dns-option <list>', 'Set DNS options', collect, [])
    .option('--add-host <list>', 'Add a custom host-to-IP mapping (host:ip)', collect, [])
    .option('--link <list>', 'Add link to another container', collect, [])
    .option('--privileged', 'Give extended privileges to this container')
    .option('--read-only', "Mount the container's root filesystem as read only")
    .option('--restart <string>', 'Restart policy to apply when a container exits', 'no')
    .option('--cap-add <list>', 'Add Linux capabilities', collect, [])
    .option('--cap-drop <list>', 'Drop Linux capabilities', collect, [])
    .option('--security-opt <list>', 'Security options (seccomp=unconfined|PROFILE.json, no-new-privileges)', collect, [])
    .option('--stop-signal <string>', 'Signal to stop a container')
    .option('--stop-timeout <int>', 'Timeout (in seconds) to stop a container')
    .option('-v, --volume <list>', 'Bind mount a volume (SRC:DST[:ro], SRC a host path or a volume name)', collect, [])
    .option('--tmpfs <list>', 'Mount a tmpfs directory (PATH[:OPTIONS])', collect, [])
    .option('-m, --memory <bytes>', 'Memory limit (e.g. 64m, 1g)')
    .option('--cpus <decimal>', 'Number of CPUs')
    .option('--pids-limit <int>', 'Tune container pids limit (set -1 for unlimited)');
}

/** docker's RAMInBytes: a number with an optional b, k, m, g (or kb, mb, gb) suffix, powers of 1024. */
export function parseBytes(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)b?$/i.exec(v.trim());
  if (!m) throw new FlagError(`invalid size: '${v}'`);
  const unit = { '': 0, k: 1, m: 2, g: 3, t: 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * 1024 ** unit);
}

/** `-e NAME` takes NAME's value from our environment, and is dropped when we have none (docker). */
export function parseEnv(list: string[], env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  for (const item of list) {
    if (item.startsWith('=')) throw new FlagError(`invalid environment variable: ${item}`);
    if (item.includes('=')) out.push(item);
    else if (env[item] !== undefined) out.push(`${item}=${env[item]}`);
  }
  return out;
}

export function readEnvFiles(files: string[]): string[] {
  const lines: string[] = [];
  for (const f of files) {
    for (const raw of readFileSync(f, 'utf8').split('\n')) {
      const line = raw.trimStart();
      if (line === '' || line.startsWith('#')) continue;
      lines.push(line);
    }
  }
  return lines;
}

interface PortRange { start: number; end: number }

function parseRange(s: string, what: string): PortRange {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) throw new FlagError(`invalid ${what}: ${s}`);
  const start = Number(m[1]);
  const end = m[2] === undefined ? start : Number(m[2]);
  if (start < 1 || end > 65535 || end < start) throw new FlagError(`invalid ${what}: ${s}`);
  return { start, end };
}

export interface Publishing {
  ExposedPorts: Record<string, Record<string, never>>;
  PortBindings: Record<string, Array<{ HostIp: string; HostPort: string }>>;
}

/**
 * docker's nat.ParsePortSpecs: `[ip:][hostPort:]containerPort[/proto]`, IPv6 host addresses in
 * brackets, equal-length ranges paired, a host range for one container port left for the daemon
 * to pick from.
 */
export function parsePublish(specs: string[]): Publishing {
  const result: Publishing = { ExposedPorts: {}, PortBindings: {} };
  for (const spec of specs) {
    let rest = spec;
    let proto = 'tcp';
    const slash = rest.lastIndexOf('/');
    if (slash >= 0) {
      proto = rest.slice(slash + 1).toLowerCase();
      rest = rest.slice(0, slash);
      if (!['tcp', 'udp', 'sctp'].includes(proto)) throw new FlagError(`invalid proto: ${proto}`);
    }
    let hostIp = '';
    const v6 = /^\[([0-9a-fA-F:.]+)\]:(.*)$/.exec(rest);
    if (v6) {
      hostIp = v6[1]!;
      rest = v6[2]!;
    }
    const parts = rest.split(':');
    let hostPart = '';
    let containerPart: string;
    if (parts.length === 1) containerPart = parts[0]!;
    else if (parts.length === 2) [hostPart, containerPart] = parts as [string, string];
    else if (parts.length === 3 && !v6) [hostIp, hostPart, containerPart] = parts as [string, string, string];
    else throw new FlagError(`invalid port format: ${spec}`);
    if (hostIp && !/^[\d.]+$/.test(hostIp) && !hostIp.includes(':')) throw new FlagError(`invalid IP address: ${hostIp}`);
    if (containerPart === '') throw new FlagError(`no port specified: ${spec}<empty>`);
    const inner = parseRange(containerPart, 'containerPort');
    const outer = hostPart === '' ? undefined : parseRange(hostPart, 'hostPort');
    const count = inner.end - inner.start + 1;
    if (outer && count > 1 && outer.end - outer.start + 1 !== count) {
      throw new FlagError(`invalid ranges specified for container and host Ports: ${containerPart} and ${hostPart}`);
    }
    for (let i = 0; i < count; i++) {
      const key = `${inner.start + i}/${proto}`;
      let hostPort = '';
      if (outer) hostPort = count > 1 ? String(outer.start + i) : outer.start === outer.end ? String(outer.start) : `${outer.start}-${outer.end}`;
      result.ExposedPorts[key] = {};
      (result.PortBindings[key] ??= []).push({ HostIp: hostIp, HostPort: hostPort });
    }
  }
  return result;
}

export function parseExpose(specs: string[]): Record<string, Record<string, never>> {
  const out: Record<string, Record<string, never>> = {};
  for (const spec of specs) {
    const [ports, proto = 'tcp'] = spec.split('/') as [string, string?];
    const r = parseRange(ports, 'range format for --expose');
    for (let p = r.start; p <= r.end; p++) out[`${p}/${proto}`] = {};
  }
  return out;
}

export function parseLabels(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of list) {
    const eq = l.indexOf('=');
    if (eq === 0) throw new FlagError(`invalid label: ${l}`);
    if (eq < 0) out[l] = '';
    else out[l.slice(0, eq)] = l.slice(eq + 1);
  }
  return out;
}

export function parseRestart(policy: string): { Name: string; MaximumRetryCount: number } {
  const [name, count] = policy.split(':') as [string, string?];
  if (!['no', 'always', 'unless-stopped', 'on-failure'].includes(name)) throw new FlagError(`invalid restart policy ${name}`);
  if (count !== undefined && (name !== 'on-failure' || !/^\d+$/.test(count))) throw new FlagError(`invalid restart policy format: ${policy}`);
  return { Name: name, MaximumRetryCount: count === undefined ? 0 : Number(count) };
}

const PREDEFINED_MODES = ['bridge', 'host', 'none', 'default'];

/** The create body docker's CLI would send for these flags. */
export function createBody(image: string, args: string[], f: ContainerFlags, env: NodeJS.ProcessEnv = process.env): Record<string, unknown> {
  const detach = Boolean(f.detach);
  const publishing = parsePublish(f.publish);
  const exposed = { ...parseExpose(f.expose), ...publishing.ExposedPorts };
  const network = f.network ?? 'default';
  const userNetwork = !PREDEFINED_MODES.includes(network) && !network.startsWith('container:');
  if ((f.networkAlias.length || f.ip || f.ip6) && !userNetwork) {
    throw new FlagError(f.ip || f.ip6 ? 'user specified IP address is supported on user defined networks only' : 'network-scoped alias is supported only for containers in user defined networks');
  }
  if (network === 'host' && f.hostname === undefined) {
    // docker takes the host's name in host mode; nothing to send.
  }
  const stopTimeout = f.stopTimeout === undefined ? undefined : Number(f.stopTimeout);
  if (stopTimeout !== undefined && !Number.isInteger(stopTimeout)) throw new FlagError(`invalid argument "${f.stopTimeout}" for "--stop-timeout" flag`);
  const body: Record<string, unknown> = {
    Hostname: f.hostname ?? '',
    Domainname: f.domainname ?? '',
    User: f.user ?? '',
    AttachStdin: Boolean(f.interactive) && !detach,
    AttachStdout: !detach,
    AttachStderr: !detach,
    Tty: Boolean(f.tty),
    OpenStdin: Boolean(f.interactive),
    StdinOnce: Boolean(f.interactive) && !detach,
    Env: [...parseEnv(readEnvFiles(f.envFile), env), ...parseEnv(f.env, env)],
    Cmd: args.length ? args : null,
    Image: image,
    WorkingDir: f.workdir ?? '',
    Entrypoint: f.entrypoint === undefined ? null : f.entrypoint === '' ? [''] : [f.entrypoint],
    Labels: parseLabels(f.label),
    ExposedPorts: exposed,
    HostConfig: {
      NetworkMode: network,
      AutoRemove: Boolean(f.rm),
      PortBindings: publishing.PortBindings,
      PublishAllPorts: Boolean(f.publishAll),
      Dns: f.dns,
      DnsSearch: f.dnsSearch,
      DnsOptions: f.dnsOption,
      ExtraHosts: f.addHost.length ? f.addHost : null,
      Links: f.link.length ? f.link : null,
      Privileged: Boolean(f.privileged),
      ReadonlyRootfs: Boolean(f.readOnly),
      RestartPolicy: parseRestart(f.restart ?? 'no'),
      CapAdd: f.capAdd.length ? f.capAdd : null,
      CapDrop: f.capDrop.length ? f.capDrop : null,
      ...(f.securityOpt.length ? { SecurityOpt: f.securityOpt.map(securityOpt) } : {}),
      Binds: f.volume?.length ? f.volume : null,
      ...(f.tmpfs?.length ? { Tmpfs: Object.fromEntries(f.tmpfs.map((t) => { const i = t.indexOf(':'); return i < 0 ? [t, ''] : [t.slice(0, i), t.slice(i + 1)]; })) } : {}),
      ...(f.memory !== undefined ? { Memory: parseBytes(f.memory) } : {}),
      ...(f.cpus !== undefined ? { NanoCpus: cpusToNano(f.cpus) } : {}),
      ...(f.pidsLimit !== undefined ? { PidsLimit: intFlag(f.pidsLimit, '--pids-limit') } : {}),
    },
    NetworkingConfig: {
      EndpointsConfig: userNetwork
        ? {
          [network]: {
            IPAMConfig: f.ip || f.ip6 ? { ...(f.ip ? { IPv4Address: f.ip } : {}), ...(f.ip6 ? { IPv6Address: f.ip6 } : {}) } : null,
            Aliases: f.networkAlias.length ? f.networkAlias : null,
          },
        }
        : {},
    },
  };
  if (f.macAddress) body.MacAddress = f.macAddress;
  if (f.stopSignal) body.StopSignal = f.stopSignal;
  if (stopTimeout !== undefined) body.StopTimeout = stopTimeout;
  return body;
}

function cpusToNano(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new FlagError(`invalid argument "${v}" for "--cpus" flag`);
  return Math.round(n * 1e9);
}

function intFlag(v: string, flag: string): number {
  if (!/^-?\d+$/.test(v)) throw new FlagError(`invalid argument "${v}" for "${flag}" flag`);
  return Number(v);
}

/** As the docker CLI does: a seccomp profile is read here and sent as its JSON text. */
function securityOpt(opt: string): string {
  const m = /^seccomp[=:](.*)$/.exec(opt);
  if (!m || m[1] === 'unconfined') return opt;
  let text: string;
  try {
    text = readFileSync(m[1]!, 'utf8');
  } catch (e) {
    throw new Error(`opening seccomp profile (${m[1]}) failed: ${(e as Error).message}`);
  }
  try {
    return `seccomp=${JSON.stringify(JSON.parse(text))}`;
  } catch (e) {
    throw new Error(`compacting json for seccomp profile (${m[1]}) failed: ${(e as Error).message}`);
  }
}
