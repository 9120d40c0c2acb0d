/** Container and network operations through the Engine API, the same requests for every engine. */
import type { Engine } from './engines.js';
import { now, run, sleep } from './util.js';

export const BUSYBOX = '/bin/busybox';

export interface RunOpts {
  network?: string;
  ports?: Array<{ host: number; container: number }>;
  cmd?: string[];
}

/** `docker run -d`: create then start; returns the id and the milliseconds until start returned. */
export async function runDetached(e: Engine, name: string, o: RunOpts = {}): Promise<{ id: string; ms: number }> {
  const exposed: Record<string, object> = {};
  const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {};
  for (const p of o.ports ?? []) {
    exposed[`${p.container}/tcp`] = {};
    bindings[`${p.container}/tcp`] = [{ HostIp: '', HostPort: String(p.host) }];
  }
  const body = {
    Image: 'busybox', Cmd: o.cmd ?? ['sleep', '86400'],
    ExposedPorts: exposed,
    HostConfig: { NetworkMode: o.network ?? 'default', PortBindings: bindings },
  };
  const t0 = now();
  const c = await e.api('POST', `/containers/create?name=${encodeURIComponent(name)}`, body);
  if (c.status !== 201) throw new Error(`${e.name}: create ${name}: ${c.status} ${c.body.trim()}`);
  const s = await e.api('POST', `/containers/${c.json.Id}/start`);
  if (s.status !== 204) throw new Error(`${e.name}: start ${name}: ${s.status} ${s.body.trim()}`);
  return { id: c.json.Id as string, ms: now() - t0 };
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ v: T; ms: number }> {
  const t0 = now();
  const v = await fn();
  return { v, ms: now() - t0 };
}

export async function rmForce(e: Engine, name: string): Promise<number> {
  const t0 = now();
  const r = await e.api('DELETE', `/containers/${encodeURIComponent(name)}?force=1`);
  if (r.status !== 204) throw new Error(`${e.name}: rm -f ${name}: ${r.status} ${r.body.trim()}`);
  return now() - t0;
}

export async function networkCreate(e: Engine, name: string): Promise<number> {
  const t0 = now();
  await e.apiOk('POST', '/networks/create', { Name: name, Driver: 'bridge', CheckDuplicate: true });
  return now() - t0;
}

export async function networkRm(e: Engine, name: string): Promise<number> {
  const t0 = now();
  await e.apiOk('DELETE', `/networks/${name}`);
  return now() - t0;
}

export async function connect(e: Engine, net: string, container: string): Promise<number> {
  const t0 = now();
  await e.apiOk('POST', `/networks/${net}/connect`, { Container: container });
  return now() - t0;
}

export async function disconnect(e: Engine, net: string, container: string): Promise<number> {
  const t0 = now();
  await e.apiOk('POST', `/networks/${net}/disconnect`, { Container: container, Force: false });
  return now() - t0;
}

/** `docker exec c true`: create, start attached (read to the end), inspect for the exit code. */
export async function execTrue(e: Engine, container: string): Promise<number> {
  const t0 = now();
  const ex = await e.apiOk('POST', `/containers/${container}/exec`, { Cmd: ['true'], AttachStdout: true, AttachStderr: true });
  const r = await e.api('POST', `/exec/${ex.Id}/start`, { Detach: false, Tty: false });
  if (r.status !== 200 && r.status !== 101) throw new Error(`${e.name}: exec start: ${r.status} ${r.body}`);
  const i = await e.apiOk('GET', `/exec/${ex.Id}/json`);
  if (i.ExitCode !== 0) throw new Error(`${e.name}: exec true exited ${i.ExitCode}`);
  return now() - t0;
}

export async function inspect(e: Engine, name: string): Promise<any> {
  return e.apiOk('GET', `/containers/${encodeURIComponent(name)}/json`);
}

export async function containerPid(e: Engine, name: string): Promise<number> {
  const j = await inspect(e, name);
  const pid = Number(j?.State?.Pid ?? 0);
  if (!pid) throw new Error(`${e.name}: ${name} has no State.Pid`);
  return pid;
}

export async function containerIp(e: Engine, name: string, network: string): Promise<string> {
  const j = await inspect(e, name);
  const ip = j?.NetworkSettings?.Networks?.[network]?.IPAddress || j?.NetworkSettings?.IPAddress;
  if (!ip) throw new Error(`${e.name}: ${name} has no address on ${network}`);
  return ip as string;
}

export const netnsOf = (pid: number) => `/proc/${pid}/ns/net`;

const resolvers = new Map<number, string>();

/**
 * The container's own resolver: the first nameserver of its /etc/resolv.conf (127.0.0.11 with
 * berth and Docker on user-defined networks; the network gateway with Podman's aardvark-dns).
 */
export async function resolverOf(pid: number): Promise<string> {
  let r = resolvers.get(pid);
  if (!r) {
    const { readFile } = await import('node:fs/promises');
    const text = await readFile(`/proc/${pid}/root/etc/resolv.conf`, 'utf8').catch(() => '');
    r = /^\s*nameserver\s+(\S+)/m.exec(text)?.[1] ?? '127.0.0.11';
    resolvers.set(pid, r);
  }
  return r;
}

/** Asks the container's resolver from inside its namespace (host busybox via nsenter); the A address or undefined. */
export async function lookup(clientPid: number, name: string): Promise<string | undefined> {
  const server = await resolverOf(clientPid);
  const r = await run('nsenter', [`--net=${netnsOf(clientPid)}`, BUSYBOX, 'nslookup', '-type=a', name, server]);
  const m = /Name:\s*\S+\s*\n\s*Address:?\s*(\d+\.\d+\.\d+\.\d+)/.exec(r.stdout);
  return m?.[1];
}

export async function pingOnce(clientPid: number, ip: string): Promise<boolean> {
  const r = await run('nsenter', [`--net=${netnsOf(clientPid)}`, BUSYBOX, 'ping', '-c1', '-W1', ip]);
  return r.code === 0;
}

/** Polls until `name` resolves at 127.0.0.11 from the client and answers one ping. */
export async function waitReachable(clientPid: number, name: string, timeoutMs = 20_000): Promise<boolean> {
  const deadline = now() + timeoutMs;
  while (now() < deadline) {
    const ip = await lookup(clientPid, name);
    if (ip && await pingOnce(clientPid, ip)) return true;
    await sleep(5);
  }
  return false;
}
