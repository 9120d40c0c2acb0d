import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { changes, extractInto, packPath, packRootfs, statPath } from '../../engine/archive.js';
import { formatEntry, readLogs } from '../../engine/logs.js';
import { sampleStats, topProcesses } from '../../engine/metrics.js';
import type { ContainerRecord } from '../../engine/types.js';
import { ApiError, BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { humanDuration } from '../human.js';
import { frame, hijack, MULTIPLEXED_STREAM, RAW_STREAM } from '../hijack.js';
import {
  boolParam, checkFilterKeys, compareVersions, intParam, labelsMatch, parseFilters, readJsonBody, sendEmpty, sendError, sendJson,
} from '../http.js';
import type { RequestContext, Router } from '../router.js';
import { networkNames, networkSettings, primaryNetworkName } from '../views/network.js';
import { validateContainerCreate, validateContainerUpdate } from '../validate/index.js';
import { checkSignal, logParams } from '../validate/params.js';

function statusText(c: ContainerRecord): string {
  const s = c.State;
  // Docker's suffixes: "(Paused)", else the health check's "(health: starting)", "(healthy)", "(unhealthy)".
  const health = s.Health ? (s.Health.Status === 'starting' ? ' (health: starting)' : ` (${s.Health.Status})`) : '';
  if (s.Status === 'running') return `Up ${humanDuration(Date.now() - Date.parse(s.StartedAt))}${health}`;
  if (s.Status === 'paused') return `Up ${humanDuration(Date.now() - Date.parse(s.StartedAt))} (Paused)`;
  if (s.Status === 'exited' || (s.Status === 'created' && s.FinishedAt !== '0001-01-01T00:00:00Z')) {
    return `Exited (${s.ExitCode}) ${humanDuration(Date.now() - Date.parse(s.FinishedAt))} ago`;
  }
  if (s.Status === 'restarting') return `Restarting (${s.ExitCode}) ${humanDuration(Date.now() - Date.parse(s.FinishedAt))} ago`;
  if (s.Status === 'removing') return 'Removal In Progress';
  if (s.Status === 'created') return 'Created';
  return s.Status;
}

/** Docker quotes arguments that contain spaces, so `ps` shows `sh -c 'echo hi'`. */
function commandLine(c: ContainerRecord): string {
  return [c.Path, ...c.Args.map((a) => (a.includes(' ') ? `'${a}'` : a))].join(' ');
}

/** ContainerSummary.Ports: published ports with their host side, exposed ones without. */
function portList(c: ContainerRecord): object[] {
  const out: object[] = [];
  const published = new Set<string>();
  for (const m of c.State.Running ? c.Published ?? [] : []) {
    published.add(`${m.containerPort}/${m.proto}`);
    out.push({ IP: m.hostIp || (m.family === 6 ? '::' : '0.0.0.0'), PrivatePort: m.containerPort, PublicPort: m.hostPort, Type: m.proto });
  }
  for (const key of Object.keys(c.Config.ExposedPorts ?? {})) {
    if (published.has(key)) continue;
    const [port, proto] = key.split('/');
    out.push({ PrivatePort: Number(port), Type: proto ?? 'tcp' });
  }
  return out;
}

/** Inspect's and ps's MountPoint list, in Docker's shapes for binds and volumes. */
function mountPoints(api: ApiContext, c: ContainerRecord): object[] {
  return api.engine.containerMounts(c).map((m) => (m.Type !== 'volume'
    ? { Type: m.Type, Source: m.Source, Destination: m.Destination, Mode: m.Mode, RW: m.RW, Propagation: m.Propagation }
    : { Type: m.Type, Name: m.Name, Source: m.Source, Destination: m.Destination, Driver: 'local', Mode: m.Mode, RW: m.RW, Propagation: '' }));
}

export function containerSummary(api: ApiContext, c: ContainerRecord): object {
  const settings = networkSettings(api.network.registry, c) as { Networks: object };
  return {
    Id: c.Id,
    Names: [c.Name],
    Image: c.Config.Image,
    ImageID: c.Image,
    Command: commandLine(c),
    Created: Math.floor(Date.parse(c.Created) / 1000),
    Ports: portList(c),
    Labels: c.Config.Labels ?? {},
    State: c.State.Status,
    Status: statusText(c),
    HostConfig: { NetworkMode: c.HostConfig.NetworkMode },
    NetworkSettings: { Networks: settings.Networks },
    Mounts: mountPoints(api, c),
  };
}

export function containerInspect(api: ApiContext, c: ContainerRecord): object {
  const dir = api.engine.bundleDir(c);
  const image = api.engine.images.find(c.Image);
  const graph = image ? (api.engine.images.inspect(image) as { GraphDriver?: { Data?: { LowerDir?: string } } }) : undefined;
  const lower = graph?.GraphDriver?.Data?.LowerDir ?? '';
  return {
    Id: c.Id,
    Created: c.Created,
    Path: c.Path,
    Args: c.Args,
    // Docker's State.Running stays true while a restart policy waits out its back-off.
    State: { ...c.State, Running: c.State.Running || c.State.Restarting },
    Image: c.Image,
    ResolvConfPath: join(dir, 'resolv.conf'),
    HostnamePath: join(dir, 'hostname'),
    HostsPath: join(dir, 'hosts'),
    LogPath: api.engine.logPath(c),
    Name: c.Name,
    RestartCount: c.RestartCount,
    Driver: 'overlay2',
    Platform: 'linux',
    MountLabel: '',
    ProcessLabel: '',
    AppArmorProfile: '',
    ExecIDs: api.execs.idsFor(c.Id),
    HostConfig: c.HostConfig,
    GraphDriver: {
      Name: 'overlay2',
      Data: {
        LowerDir: lower, MergedDir: join(dir, 'rootfs'), UpperDir: join(dir, 'diff'), WorkDir: join(dir, 'work'),
      },
    },
    Mounts: mountPoints(api, c),
    Config: c.Config,
    NetworkSettings: networkSettings(api.network.registry, c),
  };
}

const LIST_FILTERS = ['id', 'name', 'status', 'label', 'exited', 'ancestor', 'before', 'since', 'network', 'health', 'isolation', 'is-task', 'volume', 'publish', 'expose'];
const STATUSES = ['created', 'restarting', 'running', 'removing', 'paused', 'exited', 'dead'];

async function listContainers(api: ApiContext, ctx: RequestContext): Promise<object[]> {
  const all = boolParam(ctx.query.get('all'));
  const limit = intParam(ctx.query.get('limit'), 'limit') ?? -1;
  const filters = parseFilters(ctx.query.get('filters'));
  checkFilterKeys(filters, LIST_FILTERS);
  for (const s of filters.get('status') ?? []) {
    if (!STATUSES.includes(s)) throw new BadRequestError(`Invalid filter 'status=${s}'`);
  }
  let list = api.engine.list();
  if (!all && !filters.has('status') && !filters.has('exited')) list = list.filter((c) => c.State.Running || c.State.Restarting);
  const f = (k: string) => filters.get(k);
  const imageMatches = (c: ContainerRecord, ref: string): boolean => {
    const img = api.engine.images.find(ref);
    return c.Config.Image === ref || (img !== undefined && img.id === c.Image);
  };
  list = list.filter((c) => {
    if (f('id') && !f('id')!.some((v) => c.Id.startsWith(v))) return false;
    if (f('name') && !f('name')!.some((v) => new RegExp(v).test(c.Name))) return false;
    if (f('status') && !f('status')!.includes(c.State.Status)) return false;
    if (f('exited') && !(c.State.Status === 'exited' && f('exited')!.includes(String(c.State.ExitCode)))) return false;
    if (f('label') && !labelsMatch(c.Config.Labels, f('label')!)) return false;
    if (f('ancestor') && !f('ancestor')!.some((a) => imageMatches(c, a))) return false;
    if (f('network') && !f('network')!.some((v) => networkMatches(api, c, v))) return false;
    if (f('publish') && !f('publish')!.some((v) => portsMatch(v, (c.State.Running ? c.Published ?? [] : []).map((m) => `${m.containerPort}/${m.proto}`)))) return false;
    if (f('expose') && !f('expose')!.some((v) => portsMatch(v, [...Object.keys(c.Config.ExposedPorts ?? {}), ...(c.State.Running ? c.Published ?? [] : []).map((m) => `${m.containerPort}/${m.proto}`)]))) return false;
    if (f('volume') && !f('volume')!.some((v) => api.engine.containerMounts(c).some((m) => m.Name === v || m.Source === v || m.Destination === v))) return false;
    if (f('health') && !f('health')!.includes(c.State.Running && c.State.Health ? c.State.Health.Status : 'none')) return false;
    // berth is never a swarm node, so no container is a task.
    if (f('is-task') && f('is-task')!.some((v) => boolParam(v))) return false;
    if (f('isolation') && !f('isolation')!.some((v) => v === 'default' || v === '')) return false;
    return true;
  });
  for (const [key, cmp] of [['before', 1], ['since', -1]] as const) {
    for (const ref of f(key) ?? []) {
      const pivot = api.engine.get(ref);
      list = list.filter((c) => c.Created.localeCompare(pivot.Created) * cmp < 0);
    }
  }
  if (limit > 0) list = list.slice(0, limit);
  const withSize = boolParam(ctx.query.get('size'));
  return Promise.all(list.map(async (c) => ({ ...containerSummary(api, c), ...(withSize ? await api.engine.containerSizes(c) : {}) })));
}

/** `publish`/`expose` filter values: PORT[/PROTO] or START-END[/PROTO], tcp by default. */
function portsMatch(filter: string, ports: string[]): boolean {
  const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/.exec(filter);
  if (!m) throw new BadRequestError(`invalid port filter: ${filter}`);
  const lo = Number(m[1]);
  const hi = m[2] ? Number(m[2]) : lo;
  const proto = m[3] ?? 'tcp';
  return ports.some((p) => {
    const [n, pr = 'tcp'] = p.split('/');
    return pr === proto && Number(n) >= lo && Number(n) <= hi;
  });
}

/** Docker's `network` filter: any network the container is on, by name or by (a prefix of) its id. */
function networkMatches(api: ApiContext, c: ContainerRecord, v: string): boolean {
  if (networkNames(api.network.registry, c).includes(v) || primaryNetworkName(c) === v) return true;
  return Object.keys(c.Endpoints ?? {}).some((id) => id.startsWith(v));
}

async function attachRoute(api: ApiContext, ctx: RequestContext): Promise<void> {
  const c = api.engine.get(ctx.params.id!);
  const q = ctx.query;
  const wantStdin = boolParam(q.get('stdin'));
  const wantStdout = boolParam(q.get('stdout'));
  const wantStderr = boolParam(q.get('stderr'));
  const logs = boolParam(q.get('logs'));
  if (!boolParam(q.get('stream')) && !logs) throw new BadRequestError('at least one of stream or logs must be set');
  if (!c.State.Running && c.State.Status !== 'created' && !(c.State.Status === 'exited' && boolParam(q.get('stream')))) {
    throw new ConflictError('You cannot attach to a stopped container, start it first');
  }
  const tty = c.Config.Tty;
  const { socket, head } = hijack(ctx, tty ? RAW_STREAM : MULTIPLEXED_STREAM);
  const write = (stream: 1 | 2, data: Buffer) => {
    if ((stream === 1 && !wantStdout) || (stream === 2 && !wantStderr)) return;
    if (!socket.writable) return;
    socket.write(tty ? data : frame(stream, data));
  };
  if (logs) {
    await readLogs(api.engine.logPath(c), { stdout: true, stderr: true, since: 0n, until: 0n, timestamps: false }, (e) => write(e.stream, e.data));
    if (!boolParam(q.get('stream'))) { socket.end(); return; }
  }
  let session;
  const pending = api.engine.attach(c.Id);
  // A client that goes away before start must not leave a pending attach behind.
  const onEarlyClose = () => api.engine.cancelPendingAttach(c.Id);
  socket.once('close', onEarlyClose);
  try {
    session = await pending;
  } catch {
    socket.end();
    return;
  } finally {
    socket.off('close', onEarlyClose);
  }
  // A client that does not read holds the container's output back (the attach helper stops
  // reading conmon's socket) instead of berthd keeping all of it: 86 → 331 MB in 4 s before.
  const attached = session;
  let paused = false;
  session.onOutput((stream, data) => {
    write(stream, data);
    if (socket.writableNeedDrain && !paused) {
      paused = true;
      attached.pause();
      socket.once('drain', () => { paused = false; attached.resume(); });
    }
  });
  if (wantStdin) {
    if (head.length) session.stdin.write(head);
    // pipe() waits for the container to read, as Docker's io.Copy does: a container that never
    // reads its stdin stops the client, instead of berthd holding all it sends. The client's
    // half-close (its stdin ended) is passed on as EOF.
    socket.pipe(session.stdin);
  } else {
    socket.resume();
  }
  socket.on('close', () => session.close());
  socket.on('error', () => session.close());
  await session.closed;
  if (socket.writable) socket.end();
}

async function logsRoute(api: ApiContext, ctx: RequestContext): Promise<void> {
  const c = api.engine.get(ctx.params.id!);
  const { follow, ...query } = logParams(ctx.query);
  const timestamps = query.timestamps;
  const res = ctx.res;
  const tty = c.Config.Tty;
  res.writeHead(200, { 'Content-Type': tty ? RAW_STREAM : MULTIPLEXED_STREAM });
  const ac = new AbortController();
  res.on('close', () => ac.abort());
  await readLogs(api.engine.logPath(c), query, (e) => {
    const data = formatEntry(e, timestamps);
    res.write(tty ? data : frame(e.stream, data));
  }, follow ? { isDone: () => !api.engine.find(c.Id)?.State.Running, signal: ac.signal } : undefined);
  res.end();
}

async function statsRoute(api: ApiContext, ctx: RequestContext): Promise<void> {
  const c = api.engine.get(ctx.params.id!);
  const stream = boolParam(ctx.query.get('stream'), true);
  const oneShot = boolParam(ctx.query.get('one-shot'));
  const sample = async () => {
    const cur = api.engine.find(c.Id);
    if (!cur?.State.Running) return emptyStats(c);
    return sampleStats(`/berth/${c.Id}`, cur.State.Pid, c.Name.slice(1), c.Id);
  };
  const res = ctx.res;
  let prev: Record<string, unknown> | undefined;
  const next = async () => {
    const s = await sample();
    if (prev) {
      s.precpu_stats = prev.cpu_stats;
      s.preread = prev.read;
    }
    prev = s;
    return s;
  };
  if (!stream) {
    // Without a stream Docker takes two samples a second apart so clients can compute CPU %.
    if (!oneShot && c.State.Running) {
      await next();
      await new Promise((r) => setTimeout(r, 1000));
    }
    sendJson(res, 200, await next());
    return;
  }
  res.writeHead(200, { 'Content-Type': 'application/json' });
  let open = true;
  res.on('close', () => { open = false; });
  while (open) {
    res.write(JSON.stringify(await next()) + '\n');
    if (!api.engine.find(c.Id)?.State.Running) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  res.end();
}

function emptyStats(c: ContainerRecord): Record<string, unknown> {
  return {
    read: '0001-01-01T00:00:00Z', preread: '0001-01-01T00:00:00Z', name: c.Name, id: c.Id,
    pids_stats: {}, blkio_stats: {}, num_procs: 0, storage_stats: {},
    cpu_stats: { cpu_usage: { total_usage: 0, usage_in_kernelmode: 0, usage_in_usermode: 0 }, throttling_data: {} },
    precpu_stats: { cpu_usage: { total_usage: 0, usage_in_kernelmode: 0, usage_in_usermode: 0 }, throttling_data: {} },
    memory_stats: {}, networks: {},
  };
}

/** GET and HEAD /containers/{id}/archive: the path's stat in a header, and (GET) a tar of it. */
async function archiveGet(api: ApiContext, ctx: RequestContext, withBody: boolean): Promise<void> {
  const path = ctx.query.get('path');
  if (!path) throw new BadRequestError('Path cannot be empty');
  const ref = ctx.params.id!;
  await api.engine.withRootfs(ref, async (rootfs) => {
    const { host, stat } = await statPath(rootfs, path, ref);
    // Go's ModeDir is the highest bit: anything below it is not a directory.
    if (stat.name === '.' && stat.mode < 2 ** 31) throw new BadRequestError(`not a directory: ${path}`);
    const header = Buffer.from(JSON.stringify(stat)).toString('base64');
    if (!withBody) {
      ctx.res.writeHead(200, { 'X-Docker-Container-Path-Stat': header, 'Content-Type': 'application/x-tar' });
      ctx.res.end();
      return;
    }
    ctx.res.writeHead(200, { 'X-Docker-Container-Path-Stat': header, 'Content-Type': 'application/x-tar' });
    await pipeline(packPath(host, stat.name === '.'), ctx.res).catch(() => ctx.res.destroy());
  });
}

export function containerRoutes(r: Router, api: ApiContext): void {
  const e = api.engine;
  /** Containers a DELETE is removing now. */
  const removing = new Set<string>();
  r.get('/containers/json', async (ctx) => sendJson(ctx.res, 200, await listContainers(api, ctx)));
  r.post('/containers/create', async (ctx) => {
    const body = await readJsonBody(ctx.req);
    validateContainerCreate(body);
    const out = await e.create(body, ctx.query.get('name') ?? undefined);
    sendJson(ctx.res, 201, out);
  });
  r.get('/containers/{id}/json', async (ctx) => {
    const c = e.get(ctx.params.id!);
    sendJson(ctx.res, 200, { ...containerInspect(api, c), ...(boolParam(ctx.query.get('size')) ? await e.containerSizes(c) : {}) });
  });
  r.post('/containers/{id}/start', async (ctx) => {
    // Docker's rule (postContainersStart): a body that could hold a JSON object (over 7 bytes, or of
    // unknown length) was a HostConfig before API 1.24 and is refused since.
    const length = Number(ctx.req.headers['content-length'] ?? 0);
    if ((length > 7 || /chunked/i.test(String(ctx.req.headers['transfer-encoding'] ?? ''))) && compareVersions(ctx.version, '1.24') >= 0) {
      throw new BadRequestError('starting container with non-empty request body was deprecated since API v1.22 and removed in v1.24');
    }
    await e.start(ctx.params.id!);
    sendEmpty(ctx.res, 204);
  });
  r.post('/containers/{id}/stop', async (ctx) => {
    await e.stop(ctx.params.id!, intParam(ctx.query.get('t'), 't'));
    sendEmpty(ctx.res, 204);
  });
  r.post('/containers/{id}/restart', async (ctx) => {
    await e.restart(ctx.params.id!, intParam(ctx.query.get('t'), 't'));
    sendEmpty(ctx.res, 204);
  });
  r.post('/containers/{id}/kill', async (ctx) => {
    const signal = ctx.query.get('signal') || 'KILL';
    checkSignal(signal);
    // With SIGKILL the engine answers once the container has stopped, as Docker's Kill does.
    await e.kill(ctx.params.id!, signal);
    sendEmpty(ctx.res, 204);
  });
  r.post('/containers/{id}/wait', async (ctx) => {
    const cond = ctx.query.get('condition') || 'not-running';
    if (!['not-running', 'next-exit', 'removed'].includes(cond)) throw new BadRequestError(`invalid condition: "${cond}"`);
    const waiting = e.wait(ctx.params.id!, cond as 'not-running');
    // Docker sends the headers at once so clients know the wait is registered before they start.
    ctx.res.writeHead(200, { 'Content-Type': 'application/json' });
    ctx.res.flushHeaders();
    const result = await waiting;
    ctx.res.end(JSON.stringify(result) + '\n');
  });
  r.delete('/containers/{id}', async (ctx) => {
    const ref = ctx.params.id!;
    const c = e.find(ref);
    if (!c) throw new NotFoundError(`No such container: ${ref}`);
    // As Docker: while one removal runs, the others are told so (409), not answered 204 for a
    // removal they did not make; once it is done, the container is gone (404).
    if (removing.has(c.Id)) throw new ConflictError(`removal of container ${c.Id} is already in progress`);
    removing.add(c.Id);
    try {
      await e.remove(ref, { force: boolParam(ctx.query.get('force')), volumes: boolParam(ctx.query.get('v')) });
    } finally {
      removing.delete(c.Id);
    }
    sendEmpty(ctx.res, 204);
  });
  r.post('/containers/{id}/rename', async (ctx) => {
    const name = ctx.query.get('name');
    if (!name) throw new BadRequestError('Neither old nor new names may be empty');
    try {
      await e.rename(ctx.params.id!, name);
    } catch (err) {
      // Docker reserves the new name first and wraps what that says (daemon/rename.go), naming it
      // with its leading slash.
      if (err instanceof ApiError && (err.status === 400 || err.status === 409)) {
        throw new ApiError(err.status, `Error when allocating new name: ${err.message.replace(`(${name})`, `(/${name.replace(/^\//, '')})`)}`);
      }
      throw err;
    }
    sendEmpty(ctx.res, 204);
  });
  r.post('/containers/{id}/resize', async (ctx) => {
    const h = intParam(ctx.query.get('h'), 'h') ?? 0;
    const w = intParam(ctx.query.get('w'), 'w') ?? 0;
    await e.resize(ctx.params.id!, h, w);
    sendEmpty(ctx.res, 200);
  });
  r.post('/containers/{id}/update', async (ctx) => {
    const body = await readJsonBody(ctx.req);
    validateContainerUpdate(body);
    sendJson(ctx.res, 200, await e.update(ctx.params.id!, body));
  });
  r.post('/containers/{id}/pause', async (ctx) => {
    await e.pause(ctx.params.id!);
    sendEmpty(ctx.res, 204);
  });
  r.post('/containers/{id}/unpause', async (ctx) => {
    await e.unpause(ctx.params.id!);
    sendEmpty(ctx.res, 204);
  });
  r.post('/containers/{id}/attach', (ctx) => attachRoute(api, ctx));
  r.get('/containers/{id}/logs', (ctx) => logsRoute(api, ctx));
  r.get('/containers/{id}/top', async (ctx) => {
    const c = e.get(ctx.params.id!);
    if (!c.State.Running) throw new ConflictError(`Container ${c.Id} is not running`);
    sendJson(ctx.res, 200, await topProcesses(await api.runtime.pids(c.Id), ctx.query.get('ps_args') ?? '-ef'));
  });
  r.get('/containers/{id}/stats', (ctx) => statsRoute(api, ctx));
  r.get('/containers/{id}/changes', async (ctx) => {
    const { upper, lowers } = e.layerPaths(ctx.params.id!);
    const list = await changes(upper, lowers);
    // Go's nil slice: Docker answers null when nothing changed.
    sendJson(ctx.res, 200, list.length ? list : null);
  });
  r.get('/containers/{id}/export', async (ctx) => {
    await e.withRootfs(ctx.params.id!, async (rootfs) => {
      const tar = await packRootfs(rootfs);
      ctx.res.writeHead(200, { 'Content-Type': 'application/x-tar' });
      await pipeline(tar, ctx.res).catch(() => ctx.res.destroy());
    });
  });
  r.head('/containers/{id}/archive', (ctx) => archiveGet(api, ctx, false));
  r.get('/containers/{id}/archive', (ctx) => archiveGet(api, ctx, true));
  r.put('/containers/{id}/archive', async (ctx) => {
    const path = ctx.query.get('path');
    if (!path) throw new BadRequestError('Path cannot be empty');
    const ref = ctx.params.id!;
    const c = e.get(ref);
    if (c.HostConfig.ReadonlyRootfs) throw new ForbiddenError('container rootfs is marked read-only');
    await e.withRootfs(ref, (rootfs) => extractInto(rootfs, path, ctx.req, {
      container: ref,
      noOverwriteDirNonDir: boolParam(ctx.query.get('noOverwriteDirNonDir')),
      copyUIDGID: boolParam(ctx.query.get('copyUIDGID')),
    }));
    sendEmpty(ctx.res, 200);
  });
  r.post('/containers/prune', async (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    checkFilterKeys(filters, ['label', 'label!', 'until']);
    const until = filters.get('until')?.[0];
    const untilMs = until ? (/^\d+$/.test(until) ? Number(until) * 1000 : Date.parse(until)) : undefined;
    const out = await e.prune((c) => labelsMatch(c.Config.Labels, filters.get('label') ?? [])
      && !(filters.get('label!') ?? []).some((l) => labelsMatch(c.Config.Labels, [l]))
      && (untilMs === undefined || Date.parse(c.Created) < untilMs));
    sendJson(ctx.res, 200, { ContainersDeleted: out.ContainersDeleted.length ? out.ContainersDeleted : null, SpaceReclaimed: out.SpaceReclaimed });
  });
}

export function sendErrorTo(res: ServerResponse, err: unknown): void { sendError(res, err); }
