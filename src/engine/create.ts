import { existsSync } from 'node:fs';
import { BadRequestError } from '../util/errors.js';
import { parseSecurityOpt } from '../runtime/seccomp.js';
import { parseMounts, parseTmpfs } from './mounts.js';
import { validateProcessLimits, validateResources, type ProcessLimits, type Resources } from './resources.js';
import type { ImageRuntimeConfig } from '../images/types.js';
import type { HealthConfig } from './health.js';
import { ZERO_TIME, type ContainerRecord, type HostConfig } from './types.js';

/** The ContainerCreate request body after type checking, with Docker's defaults filled in. */
export interface CreateBody {
  Hostname?: string;
  Domainname?: string;
  User?: string;
  AttachStdin?: boolean;
  AttachStdout?: boolean;
  AttachStderr?: boolean;
  ExposedPorts?: Record<string, object>;
  Tty?: boolean;
  OpenStdin?: boolean;
  StdinOnce?: boolean;
  Env?: string[];
  Cmd?: string[] | null;
  Entrypoint?: string[] | null;
  Image?: string;
  Labels?: Record<string, string>;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  StopSignal?: string;
  StopTimeout?: number;
  MacAddress?: string;
  HostConfig: HostConfig;
  NetworkingConfig?: { EndpointsConfig?: Record<string, unknown> };
}

type Kind = 'string' | 'boolean' | 'number' | 'string[]' | 'object' | 'stringmap' | 'command';

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function check(value: unknown, kind: Kind, field: string): void {
  const bad = () => new BadRequestError(`invalid type for field ${field}: expected ${kind === 'command' ? 'string or array of strings' : kind === 'stringmap' ? 'object of strings' : kind === 'string[]' ? 'array of strings' : kind}, got ${typeName(value)}`);
  if (value === undefined || value === null) return;
  switch (kind) {
    case 'string': case 'boolean': case 'number':
      if (typeof value !== kind) throw bad();
      return;
    case 'string[]':
      if (!Array.isArray(value) || value.some((x) => typeof x !== 'string')) throw bad();
      return;
    case 'command':
      if (typeof value === 'string') return;
      if (!Array.isArray(value) || value.some((x) => typeof x !== 'string')) throw bad();
      return;
    case 'object':
      if (typeof value !== 'object' || Array.isArray(value)) throw bad();
      return;
    case 'stringmap':
      if (typeof value !== 'object' || Array.isArray(value) || Object.values(value as object).some((x) => typeof x !== 'string')) throw bad();
  }
}

const CONFIG_FIELDS: Record<string, Kind> = {
  Hostname: 'string', Domainname: 'string', User: 'string', AttachStdin: 'boolean', AttachStdout: 'boolean',
  AttachStderr: 'boolean', ExposedPorts: 'object', Tty: 'boolean', OpenStdin: 'boolean', StdinOnce: 'boolean',
  Env: 'string[]', Cmd: 'command', Entrypoint: 'command', Image: 'string', Labels: 'stringmap',
  Volumes: 'object', WorkingDir: 'string', StopSignal: 'string', StopTimeout: 'number', MacAddress: 'string',
  HostConfig: 'object', NetworkingConfig: 'object',
};

const HOST_FIELDS: Record<string, Kind> = {
  NetworkMode: 'string', AutoRemove: 'boolean', Privileged: 'boolean', CapAdd: 'string[]', CapDrop: 'string[]',
  Dns: 'string[]', DnsSearch: 'string[]', DnsOptions: 'string[]', ExtraHosts: 'string[]', Links: 'string[]',
  PortBindings: 'object', PublishAllPorts: 'boolean', RestartPolicy: 'object', ReadonlyRootfs: 'boolean',
  Binds: 'string[]', Tmpfs: 'stringmap', SecurityOpt: 'string[]',
};

/**
 * Docker accepts Cmd and Entrypoint as a single string (one argv element) or an argv array. An
 * explicitly empty value ("" or []) is kept as [] so it can reset the image's value.
 */
function command(v: unknown): string[] | null | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v === '' ? [] : [v];
  const arr = v as string[];
  return arr.length === 1 && arr[0] === '' ? [] : arr;
}

export function normaliseCreateBody(raw: unknown): CreateBody {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new BadRequestError('invalid JSON body: expected an object');
  }
  const b = raw as Record<string, unknown>;
  for (const [k, kind] of Object.entries(CONFIG_FIELDS)) check(b[k], kind, k);
  const hc = (b.HostConfig ?? {}) as Record<string, unknown>;
  for (const [k, kind] of Object.entries(HOST_FIELDS)) check(hc[k], kind, `HostConfig.${k}`);
  const rp = (hc.RestartPolicy ?? {}) as Record<string, unknown>;
  check(rp.Name, 'string', 'HostConfig.RestartPolicy.Name');
  check(rp.MaximumRetryCount, 'number', 'HostConfig.RestartPolicy.MaximumRetryCount');
  const policy = (rp.Name as string | undefined) ?? '';
  if (!['', 'no', 'always', 'unless-stopped', 'on-failure'].includes(policy)) {
    throw new BadRequestError(`invalid restart policy '${policy}'`);
  }
  if (hc.AutoRemove && policy && policy !== 'no') {
    throw new BadRequestError("can't create 'AutoRemove' container with restart policy");
  }
  const envList = (b.Env as string[] | undefined) ?? undefined;
  for (const e of envList ?? []) {
    if (e === '' || e.startsWith('=')) throw new BadRequestError(`invalid environment variable: ${e}`);
  }
  const host: HostConfig = {
    ...(hc as object),
    NetworkMode: (hc.NetworkMode as string) || 'default',
    AutoRemove: (hc.AutoRemove as boolean) ?? false,
    Privileged: (hc.Privileged as boolean) ?? false,
    CapAdd: (hc.CapAdd as string[]) ?? null,
    CapDrop: (hc.CapDrop as string[]) ?? null,
    Dns: (hc.Dns as string[]) ?? [],
    DnsSearch: (hc.DnsSearch as string[]) ?? [],
    DnsOptions: (hc.DnsOptions as string[]) ?? [],
    ExtraHosts: (hc.ExtraHosts as string[]) ?? null,
    Links: (hc.Links as string[]) ?? null,
    PortBindings: (hc.PortBindings as HostConfig['PortBindings']) ?? {},
    PublishAllPorts: (hc.PublishAllPorts as boolean) ?? false,
    RestartPolicy: { Name: policy === '' ? 'no' : policy, MaximumRetryCount: (rp.MaximumRetryCount as number) ?? 0 },
    ReadonlyRootfs: (hc.ReadonlyRootfs as boolean) ?? false,
    Binds: (hc.Binds as string[]) ?? null,
    // Recorded as Docker records it: the client's choice, else Docker's default json-file. berth
    // always logs through conmon (k8s-file on disk) and serves /logs as json-file does; clients
    // look at this field to decide whether logs can be read (docker-py's run() returns None for
    // any other driver).
    LogConfig: logConfig(hc.LogConfig),
  };
  // Checked here so that a bad mount fails the create (400), not a later start.
  for (const m of parseMounts(null, hc.Mounts)) {
    if (m.Type === 'bind' && !existsSync(m.Source)) throw new BadRequestError(`invalid mount config for type "bind": bind source path does not exist: ${m.Source}`);
  }
  const dests = [...parseMounts(host.Binds, hc.Mounts), ...parseTmpfs(hc.Tmpfs as Record<string, string> | undefined)].map((m) => m.Destination);
  const dup = dests.find((d, i) => dests.indexOf(d) !== i);
  if (dup) throw new BadRequestError(`Duplicate mount point: ${dup}`);
  // Bad security options and seccomp profiles fail the create (400), as in Docker.
  parseSecurityOpt(hc.SecurityOpt as string[] | undefined);
  validateResources(hc as Resources);
  validateProcessLimits({ ...(hc as ProcessLimits), NetworkMode: host.NetworkMode });
  for (const h of host.ExtraHosts ?? []) {
    if (h.indexOf(':') <= 0) throw new BadRequestError(`invalid IP address in add-host: "${h}"`);
  }
  return {
    ...(b as object),
    Cmd: command(b.Cmd),
    Entrypoint: command(b.Entrypoint),
    HostConfig: host,
  } as CreateBody;
}

/** The image's and the create request's settings merged into a new container's record, as Docker merges them. */
export function newContainerRecord(o: {
  id: string; name: string; body: CreateBody; image: { id: string; config: { config?: ImageRuntimeConfig } }; mode: string;
  hostname: string; sharedWithId?: string; endpoints: ContainerRecord['Endpoints']; anonymousVolumes: Record<string, string>;
}): ContainerRecord {
  const { body } = o;
  const imgCfg = o.image.config.config ?? {};
  // An explicit entrypoint resets the image's Cmd, as in Docker.
  const entrypoint = body.Entrypoint !== undefined ? nonEmpty(body.Entrypoint) : imgCfg.Entrypoint ?? null;
  const cmd = body.Cmd !== undefined ? nonEmpty(body.Cmd) : body.Entrypoint !== undefined ? null : imgCfg.Cmd ?? null;
  const argv = [...(entrypoint ?? []), ...(cmd ?? [])];
  if (argv.length === 0) throw new BadRequestError('No command specified');
  // The image's HEALTHCHECK unless the request sets one; a Test of its own replaces the image's.
  const healthcheck = { ...((imgCfg as { Healthcheck?: HealthConfig }).Healthcheck ?? {}), ...((body as { Healthcheck?: HealthConfig }).Healthcheck ?? {}) } as HealthConfig;
  if (!healthcheck.Test?.length) delete healthcheck.Test;
  return {
    Id: o.id,
    Created: new Date().toISOString(),
    Path: argv[0]!,
    Args: argv.slice(1),
    Name: o.name,
    Image: o.image.id,
    Config: {
      Hostname: o.hostname,
      Domainname: body.Domainname ?? '',
      User: body.User ?? imgCfg.User ?? '',
      AttachStdin: body.AttachStdin ?? false,
      AttachStdout: body.AttachStdout ?? false,
      AttachStderr: body.AttachStderr ?? false,
      ExposedPorts: { ...(imgCfg.ExposedPorts ?? {}), ...(body.ExposedPorts ?? {}) },
      Tty: body.Tty ?? false,
      OpenStdin: body.OpenStdin ?? false,
      StdinOnce: body.StdinOnce ?? false,
      Env: mergeEnv(imgCfg.Env ?? [], body.Env ?? []),
      Cmd: cmd,
      Image: body.Image!,
      Volumes: body.Volumes ?? imgCfg.Volumes ?? null,
      WorkingDir: body.WorkingDir || imgCfg.WorkingDir || '',
      Entrypoint: entrypoint,
      OnBuild: null,
      Labels: { ...(imgCfg.Labels ?? {}), ...(body.Labels ?? {}) },
      ...(body.StopSignal || imgCfg.StopSignal ? { StopSignal: body.StopSignal || imgCfg.StopSignal } : {}),
      ...(body.StopTimeout !== undefined ? { StopTimeout: body.StopTimeout } : {}),
      ...(Object.keys(healthcheck).length ? { Healthcheck: healthcheck } : {}),
    },
    HostConfig: { ...body.HostConfig, NetworkMode: o.sharedWithId ? `container:${o.sharedWithId}` : o.mode },
    NetworkingConfig: { EndpointsConfig: body.NetworkingConfig?.EndpointsConfig ?? {} },
    State: {
      Status: 'created', Running: false, Paused: false, Restarting: false, OOMKilled: false, Dead: false,
      Pid: 0, ExitCode: 0, Error: '', StartedAt: ZERO_TIME, FinishedAt: ZERO_TIME,
    },
    RestartCount: 0,
    ManuallyStopped: false,
    NetnsPath: '',
    Endpoints: o.endpoints,
    ...(Object.keys(o.anonymousVolumes).length ? { AnonymousVolumes: o.anonymousVolumes } : {}),
  };
}


function nonEmpty(v: string[] | null | undefined): string[] | null {
  return v && v.length ? v : null;
}

function mergeEnv(base: string[], overrides: string[]): string[] {
  const out = new Map<string, string>();
  for (const e of [...base, ...overrides]) {
    const k = e.includes('=') ? e.slice(0, e.indexOf('=')) : e;
    out.set(k, e);
  }
  return [...out.values()];
}

function logConfig(v: unknown): { Type: string; Config: Record<string, string> } {
  const lc = (v ?? {}) as { Type?: unknown; Config?: unknown };
  check(lc.Type, 'string', 'HostConfig.LogConfig.Type');
  check(lc.Config, 'stringmap', 'HostConfig.LogConfig.Config');
  return { Type: (lc.Type as string) || 'json-file', Config: (lc.Config as Record<string, string> | undefined) ?? {} };
}
