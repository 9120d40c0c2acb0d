import { promises as fs } from 'node:fs';
import { arch, cpus, release, totalmem } from 'node:os';
import type { EngineEvent } from '../../engine/events.js';
import { dirSize } from '../../engine/archive.js';
import { swapAccounting } from '../../engine/resources.js';
import { run } from '../../util/exec.js';
import type { ApiContext } from '../context.js';
import { API_VERSION, MIN_API_VERSION, checkFilterKeys, parseFilters, sendJson } from '../http.js';
import type { RequestContext, Router } from '../router.js';
import { parseEventTime } from '../validate/params.js';

function goArch(): string {
  return ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x' } as Record<string, string>)[arch()] ?? arch();
}

let runcVersionCache: string | undefined;
async function runcVersion(): Promise<string> {
  if (runcVersionCache) return runcVersionCache;
  const r = await run('runc', ['--version']);
  runcVersionCache = /runc version (\S+)/.exec(r.stdout)?.[1] ?? 'unknown';
  return runcVersionCache;
}

async function osName(): Promise<string> {
  try {
    const text = await fs.readFile('/etc/os-release', 'utf8');
    return /^PRETTY_NAME="?([^"\n]+)"?/m.exec(text)?.[1] ?? 'Linux';
  } catch {
    return 'Linux';
  }
}

async function version(api: ApiContext): Promise<object> {
  const rv = await runcVersion();
  return {
    Platform: { Name: 'berth' },
    Components: [
      { Name: 'Engine', Version: api.info.version, Details: { ApiVersion: API_VERSION, Arch: goArch(), KernelVersion: release(), MinAPIVersion: MIN_API_VERSION, Os: 'linux' } },
      { Name: 'runc', Version: rv, Details: { GitCommit: '' } },
    ],
    Version: api.info.version,
    ApiVersion: API_VERSION,
    MinAPIVersion: MIN_API_VERSION,
    GitCommit: '',
    GoVersion: `node ${process.version}`,
    Os: 'linux',
    Arch: goArch(),
    KernelVersion: release(),
    BuildTime: '',
  };
}

async function info(api: ApiContext): Promise<object> {
  const list = api.engine.list();
  const count = (s: string) => list.filter((c) => c.State.Status === s).length;
  return {
    ID: api.info.id,
    Containers: list.length,
    ContainersRunning: count('running'),
    ContainersPaused: count('paused'),
    ContainersStopped: list.length - count('running') - count('paused'),
    Images: api.engine.images.list().length,
    Driver: 'overlay2',
    DriverStatus: [['Backing Filesystem', 'extfs']],
    // Plugin drivers are listed once a network uses them or a create activated them, as Docker lists its legacy plugins.
    Plugins: { Volume: ['local'], Network: ['bridge', 'host', 'null', ...api.network.registry.registeredDrivers().filter((d) => d.external).map((d) => d.name).sort()], Authorization: null, Log: ['json-file'] },
    MemoryLimit: true, SwapLimit: swapAccounting(), KernelMemory: false, CpuCfsPeriod: true, CpuCfsQuota: true,
    CPUShares: true, CPUSet: true, PidsLimit: true, IPv4Forwarding: true, BridgeNfIptables: false,
    BridgeNfIp6tables: false, Debug: false, NFd: 0, OomKillDisable: true, NGoroutines: 0,
    SystemTime: new Date().toISOString(),
    LoggingDriver: 'json-file',
    CgroupDriver: 'cgroupfs',
    CgroupVersion: '1',
    NEventsListener: 0,
    KernelVersion: release(),
    OperatingSystem: await osName(),
    OSVersion: '',
    OSType: 'linux',
    Architecture: arch() === 'x64' ? 'x86_64' : arch(),
    IndexServerAddress: 'https://index.docker.io/v1/',
    RegistryConfig: { AllowNondistributableArtifactsCIDRs: [], AllowNondistributableArtifactsHostnames: [], InsecureRegistryCIDRs: ['127.0.0.0/8'], IndexConfigs: {}, Mirrors: [] },
    NCPU: cpus().length,
    MemTotal: totalmem(),
    GenericResources: null,
    DockerRootDir: api.info.root,
    HttpProxy: '', HttpsProxy: '', NoProxy: '',
    Name: api.info.hostname,
    Labels: [],
    ExperimentalBuild: false,
    ServerVersion: api.info.version,
    Runtimes: { runc: { path: 'runc' } },
    DefaultRuntime: 'runc',
    Swarm: api.cluster ? await api.cluster.control.info() : { NodeID: '', NodeAddr: '', LocalNodeState: 'inactive', ControlAvailable: false, Error: '', RemoteManagers: null },
    LiveRestoreEnabled: true,
    Isolation: '',
    InitBinary: '',
    ContainerdCommit: { ID: '', Expected: '' },
    RuncCommit: { ID: await runcVersion(), Expected: '' },
    InitCommit: { ID: '', Expected: '' },
    SecurityOptions: ['name=seccomp,profile=default', 'name=cgroupns'],
    Warnings: [],
  };
}

/**
 * Docker's event filter (daemon/events/filter.go): every key given must match. Object keys
 * (container, network, …) match any event whose actor has that id or name prefix, whatever its type;
 * `image` matches an image event's name or a container event's image.
 */
function eventMatches(e: EngineEvent, filters: Map<string, string[]>): boolean {
  const f = (k: string) => filters.get(k);
  const fuzzy = (vals: string[] | undefined) => !vals || vals.some((v) => e.Actor.ID === v || e.Actor.ID.startsWith(v)
    || e.Actor.Attributes.name === v || (e.Actor.Attributes.name ?? '').startsWith(v));
  if (f('type') && !f('type')!.includes(e.Type)) return false;
  if (f('event') && !f('event')!.some((a) => e.Action === a || e.Action.startsWith(`${a}:`))) return false;
  if (f('scope') && !f('scope')!.includes(e.scope)) return false;
  if (f('daemon') && e.Type !== 'daemon') return false;
  for (const key of ['container', 'network', 'volume', 'plugin', 'node', 'service', 'secret', 'config']) {
    if (!fuzzy(f(key))) return false;
  }
  if (f('image')) {
    const name = e.Type === 'image' ? e.Actor.Attributes.name : e.Actor.Attributes.image;
    const strip = (x: string) => x.replace(/:[^:/]+$/, '');
    const cands = [e.Actor.ID, strip(e.Actor.ID), ...(name ? [name, strip(name)] : [])];
    if (!f('image')!.some((v) => cands.includes(v))) return false;
  }
  if (f('label') && !f('label')!.every((l) => {
    const i = l.indexOf('=');
    return i < 0 ? e.Actor.Attributes[l] !== undefined : e.Actor.Attributes[l.slice(0, i)] === l.slice(i + 1);
  })) return false;
  return true;
}

async function events(api: ApiContext, ctx: RequestContext): Promise<void> {
  const filters = parseFilters(ctx.query.get('filters'));
  checkFilterKeys(filters, ['container', 'daemon', 'event', 'image', 'label', 'network', 'node', 'plugin', 'scope', 'secret', 'service', 'type', 'volume', 'config']);
  const since = parseEventTime(ctx.query.get('since'));
  const until = parseEventTime(ctx.query.get('until'));
  const res = ctx.res;
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.flushHeaders();
  const send = (e: EngineEvent) => {
    if (until !== undefined && e.timeNano > until) return;
    if (eventMatches(e, filters)) res.write(JSON.stringify(e) + '\n');
  };
  if (since !== undefined) api.engine.events.since(since).forEach(send);
  if (until !== undefined && until <= Date.now() * 1e6) {
    res.end();
    return;
  }
  await new Promise<void>((resolve) => {
    const unsubscribe = api.engine.events.subscribe(send);
    const timer = until !== undefined ? setTimeout(() => res.end(), until / 1e6 - Date.now()) : undefined;
    res.on('close', () => { unsubscribe(); clearTimeout(timer); resolve(); });
  });
}

export function systemRoutes(r: Router, api: ApiContext): void {
  const ping = (ctx: RequestContext) => {
    const res = ctx.res;
    // A fixed length: without it Node answers chunked, two more writes on the hottest route pollers use.
    res.writeHead(200, {
      'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-cache, no-store, must-revalidate', Pragma: 'no-cache',
      'Content-Length': 2,
    });
    res.end(ctx.req.method === 'HEAD' ? undefined : 'OK');
  };
  r.get('/_ping', ping);
  r.head('/_ping', ping);
  r.get('/version', async (ctx) => sendJson(ctx.res, 200, await version(api)));
  r.get('/info', async (ctx) => sendJson(ctx.res, 200, await info(api)));
  r.get('/events', (ctx) => events(api, ctx));
  r.get('/system/df', async (ctx) => {
    const images = api.engine.images.summaries() as Array<{ Id: string }>;
    const containers = api.engine.list();
    const volumes = api.engine.volumes;
    sendJson(ctx.res, 200, {
      LayersSize: api.engine.images.list().reduce((a, i) => a + i.size, 0),
      Images: images.map((s) => ({ ...s, Containers: containers.filter((c) => c.Image === s.Id).length })),
      Containers: await Promise.all(containers.map(async (c) => ({
        Id: c.Id, Names: [c.Name], Image: c.Config.Image, ImageID: c.Image, Command: [c.Path, ...c.Args].join(' '),
        Created: Math.floor(Date.parse(c.Created) / 1000), State: c.State.Status, Status: c.State.Status,
        ...(await api.engine.containerSizes(c)), Labels: c.Config.Labels, Mounts: [], Ports: [],
      }))),
      Volumes: await Promise.all(volumes.list().map(async (v) => ({
        ...volumes.inspect(v), UsageData: { Size: await dirSize(volumes.mountpoint(v.Name)), RefCount: api.engine.volumeUsers(v.Name).length },
      }))),
      BuildCache: [],
    });
  });
  // Docker without plugins lists none (the other /plugins endpoints stay unrouted).
  r.get('/plugins', (ctx) => sendJson(ctx.res, 200, []));
  r.post('/build/prune', (ctx) => sendJson(ctx.res, 200, { CachesDeleted: null, SpaceReclaimed: 0 }));
}
