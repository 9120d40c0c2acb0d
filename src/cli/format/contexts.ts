/**
 * The fields `--format` templates see for each list command, named and computed as docker's
 * formatter contexts (ContainerContext, imageContext, networkContext, statsContext) do.
 */
import { splitReference } from '../../images/reference.js';
import { Struct } from '../gotemplate.js';
import type { ListFormat } from './formatter.js';
import { ago, bytesSize, ellipsis, goTimeString, humanSize, parseRfc3339, truncateId } from './human.js';

// ---------------------------------------------------------------------------------------------
// API shapes (only the fields the CLI reads)

export interface PortSummary { IP?: string; PrivatePort: number; PublicPort?: number; Type: string }
export interface MountPoint { Name?: string; Source?: string; Driver?: string }
export interface ContainerSummary {
  Id: string;
  Names?: string[] | null;
  Image?: string;
  ImageID?: string;
  Command?: string;
  Created?: number;
  Ports?: PortSummary[] | null;
  SizeRw?: number;
  SizeRootFs?: number;
  Labels?: Record<string, string> | null;
  State?: string;
  Status?: string;
  Mounts?: MountPoint[] | null;
  NetworkSettings?: { Networks?: Record<string, unknown> | null } | null;
}

export interface ImageSummary {
  Id: string;
  RepoTags?: string[] | null;
  RepoDigests?: string[] | null;
  Created?: number;
  Size?: number;
  VirtualSize?: number;
  SharedSize?: number;
  Containers?: number;
  Labels?: Record<string, string> | null;
}

export interface NetworkResource {
  Id: string;
  Name: string;
  Driver?: string;
  Scope?: string;
  EnableIPv6?: boolean;
  Internal?: boolean;
  Labels?: Record<string, string> | null;
  Created?: string;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** strconv.Quote: double quotes, Go escapes for control characters, printable Unicode kept. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    switch (ch) {
      case '"': out += '\\"'; continue;
      case '\\': out += '\\\\'; continue;
      case '\n': out += '\\n'; continue;
      case '\t': out += '\\t'; continue;
      case '\r': out += '\\r'; continue;
      case '\x07': out += '\\a'; continue;
      case '\b': out += '\\b'; continue;
      case '\f': out += '\\f'; continue;
      case '\v': out += '\\v'; continue;
    }
    if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

function sortedLabels(labels: Record<string, string> | null | undefined): string {
  if (!labels) return '';
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).sort().join(',');
}

/** reference.FamiliarString: "docker.io/library/busybox:latest" → "busybox:latest". */
export function familiarName(ref: string): string {
  return ref.replace(/^docker\.io\/library\//, '').replace(/^docker\.io\//, '').replace(/^index\.docker\.io\/(library\/)?/, '');
}

/**
 * formatter.DisplayablePorts of docker 20.10: consecutive ports are grouped into ranges, published
 * ports print as "0.0.0.0:8080->80/tcp" (IPv6 hosts without brackets: ":::8080->80/tcp").
 */
export function displayablePorts(ports: PortSummary[] | null | undefined): string {
  if (!ports || ports.length === 0) return '';
  const sorted = [...ports].sort((a, b) => {
    if (a.PrivatePort !== b.PrivatePort) return a.PrivatePort - b.PrivatePort;
    if ((a.IP ?? '') !== (b.IP ?? '')) return (a.IP ?? '') < (b.IP ?? '') ? -1 : 1;
    if ((a.PublicPort ?? 0) !== (b.PublicPort ?? 0)) return (a.PublicPort ?? 0) - (b.PublicPort ?? 0);
    return a.Type < b.Type ? -1 : a.Type > b.Type ? 1 : 0;
  });
  const groups = new Map<string, { first: number; last: number }>();
  const order: string[] = [];
  const result: string[] = [];
  const hostMappings: string[] = [];
  const formGroup = (key: string, first: number, last: number) => {
    const parts = key.split('/');
    let type = parts[0]!;
    let ip = '';
    if (parts.length > 1) {
      ip = parts.slice(0, -1).join('/');
      type = parts[parts.length - 1]!;
    }
    let group = first === last ? `${first}` : `${first}-${last}`;
    if (ip) group = `${ip}:${group}->${group}`;
    return `${group}/${type}`;
  };
  for (const p of sorted) {
    const current = p.PrivatePort;
    let key = p.Type;
    if (p.IP) {
      if ((p.PublicPort ?? 0) !== current) {
        hostMappings.push(`${p.IP}:${p.PublicPort ?? 0}->${p.PrivatePort}/${p.Type}`);
        continue;
      }
      key = `${p.IP}/${p.Type}`;
    }
    const g = groups.get(key);
    if (!g) {
      groups.set(key, { first: current, last: current });
      order.push(key);
      continue;
    }
    if (current === g.last + 1) {
      g.last = current;
      continue;
    }
    result.push(formGroup(key, g.first, g.last));
    groups.set(key, { first: current, last: current });
  }
  for (const key of order) {
    const g = groups.get(key)!;
    result.push(formGroup(key, g.first, g.last));
  }
  return [...result, ...hostMappings].join(', ');
}

// ---------------------------------------------------------------------------------------------
// Containers (docker ps)

export const CONTAINER_FORMAT: ListFormat = {
  table: 'table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}',
  headers: {
    ID: 'CONTAINER ID', Names: 'NAMES', Image: 'IMAGE', Command: 'COMMAND', CreatedAt: 'CREATED AT',
    RunningFor: 'CREATED', Ports: 'PORTS', State: 'STATE', Status: 'STATUS', Size: 'SIZE', Labels: 'LABELS',
    Mounts: 'MOUNTS', LocalVolumes: 'LOCAL VOLUMES', Networks: 'NETWORKS',
  },
};

export function containerRow(c: ContainerSummary, trunc: boolean, now = Date.now()): Struct {
  const created = c.Created ?? 0;
  return new Struct('*formatter.ContainerContext', {
    ID: () => (trunc ? truncateId(c.Id) : c.Id),
    Names: () => {
      const names = (c.Names ?? []).map((n) => n.replace(/^\//, ''));
      // Truncated output shows one name: the first that is not a legacy link ("other/alias").
      if (trunc) return names.find((n) => !n.includes('/')) ?? '';
      return names.join(',');
    },
    Image: () => {
      const image = c.Image ?? '';
      if (image === '') return '<no image>';
      if (!trunc) return image;
      if (c.ImageID && truncateId(c.ImageID) === truncateId(image)) return truncateId(image);
      const ref = splitReference(image);
      if (ref.digest) return familiarName(ref.tag ? `${ref.name}:${ref.tag}` : ref.name);
      return familiarName(image);
    },
    Command: () => goQuote(trunc ? ellipsis(c.Command ?? '', 20) : c.Command ?? ''),
    CreatedAt: () => goTimeString(new Date(created * 1000)),
    RunningFor: () => ago(created, now),
    Ports: () => displayablePorts(c.Ports),
    State: () => c.State ?? '',
    Status: () => c.Status ?? '',
    Size: () => {
      const rw = humanSize(c.SizeRw ?? 0);
      return (c.SizeRootFs ?? 0) > 0 ? `${rw} (virtual ${humanSize(c.SizeRootFs!)})` : rw;
    },
    Labels: () => sortedLabels(c.Labels),
    Label: (name: unknown) => c.Labels?.[String(name)] ?? '',
    Mounts: () => (c.Mounts ?? []).map((m) => {
      const name = m.Name || m.Source || '';
      return trunc ? ellipsis(name, 15) : name;
    }).join(','),
    LocalVolumes: () => String((c.Mounts ?? []).filter((m) => m.Driver === 'local').length),
    Networks: () => Object.keys(c.NetworkSettings?.Networks ?? {}).sort().join(','),
  });
}

// ---------------------------------------------------------------------------------------------
// Images (docker images)

export const IMAGE_FORMAT: ListFormat = {
  table: 'table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}',
  headers: {
    ID: 'IMAGE ID', Repository: 'REPOSITORY', Tag: 'TAG', Digest: 'DIGEST', CreatedSince: 'CREATED',
    CreatedAt: 'CREATED AT', Size: 'SIZE', Containers: 'CONTAINERS', VirtualSize: 'SIZE',
    SharedSize: 'SHARED SIZE', UniqueSize: 'UNIQUE SIZE',
  },
};

export const IMAGE_FORMAT_DIGESTS = 'table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}';

interface ImageLine { image: ImageSummary; repo: string; tag: string; digest: string }

/** One row per repository and tag (and per digest with --digests), as docker's imageFormat does. */
export function imageLines(images: ImageSummary[], withDigests: boolean): ImageLine[] {
  const out: ImageLine[] = [];
  for (const image of images) {
    const tags = new Map<string, string[]>();
    const digests = new Map<string, string[]>();
    for (const rt of image.RepoTags ?? []) {
      if (rt === '<none>:<none>') continue;
      const ref = splitReference(rt);
      if (!ref.tag) continue;
      const repo = familiarName(ref.name);
      tags.set(repo, [...(tags.get(repo) ?? []), ref.tag]);
    }
    for (const rd of image.RepoDigests ?? []) {
      if (rd === '<none>@<none>') continue;
      const ref = splitReference(rd);
      if (!ref.digest) continue;
      const repo = familiarName(ref.name);
      digests.set(repo, [...(digests.get(repo) ?? []), ref.digest]);
    }
    const before = out.length;
    for (const [repo, tagList] of tags) {
      const ds = withDigests ? digests.get(repo) ?? [] : [];
      digests.delete(repo);
      for (const tag of tagList) {
        if (ds.length === 0) out.push({ image, repo, tag, digest: '<none>' });
        else for (const d of ds) out.push({ image, repo, tag, digest: d });
      }
    }
    for (const [repo, ds] of digests) {
      if (withDigests) for (const d of ds) out.push({ image, repo, tag: '<none>', digest: d });
      else out.push({ image, repo, tag: '<none>', digest: '<none>' });
    }
    if (out.length === before) out.push({ image, repo: '<none>', tag: '<none>', digest: '<none>' });
  }
  return out;
}

export function imageRow(line: ImageLine, trunc: boolean, now = Date.now()): Struct {
  const i = line.image;
  const size = (n: number | undefined) => humanSize(n ?? 0);
  return new Struct('*formatter.imageContext', {
    ID: () => (trunc ? truncateId(i.Id) : i.Id),
    Repository: () => line.repo,
    Tag: () => line.tag,
    Digest: () => line.digest,
    CreatedSince: () => (i.Created ? ago(i.Created, now) : 'N/A'),
    CreatedAt: () => goTimeString(new Date((i.Created ?? 0) * 1000)),
    Size: () => size(i.Size),
    Containers: () => (i.Containers === undefined || i.Containers === -1 ? 'N/A' : String(i.Containers)),
    VirtualSize: () => size(i.VirtualSize ?? i.Size),
    SharedSize: () => (i.SharedSize === undefined || i.SharedSize === -1 ? 'N/A' : size(i.SharedSize)),
    UniqueSize: () => (i.SharedSize === undefined || i.SharedSize === -1 ? 'N/A' : size((i.Size ?? 0) - i.SharedSize)),
  });
}

// ---------------------------------------------------------------------------------------------
// Networks (docker network ls)

export const NETWORK_FORMAT: ListFormat = {
  table: 'table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}',
  headers: {
    ID: 'NETWORK ID', Name: 'NAME', Driver: 'DRIVER', Scope: 'SCOPE', IPv6: 'IPV6', Internal: 'INTERNAL',
    Labels: 'LABELS', CreatedAt: 'CREATED AT',
  },
};

export function networkRow(n: NetworkResource, trunc: boolean): Struct {
  return new Struct('*formatter.networkContext', {
    ID: () => (trunc ? truncateId(n.Id) : n.Id),
    Name: () => n.Name,
    Driver: () => n.Driver ?? '',
    Scope: () => n.Scope ?? '',
    IPv6: () => String(!!n.EnableIPv6),
    Internal: () => String(!!n.Internal),
    Labels: () => sortedLabels(n.Labels),
    Label: (name: unknown) => n.Labels?.[String(name)] ?? '',
    CreatedAt: () => {
      const t = n.Created ? parseRfc3339(n.Created) : undefined;
      return t ? goTimeString(t.date, t.nanos) : '';
    },
  });
}

/** sortorder.NaturalLess, which docker uses to order `network ls`: digit runs compare as numbers. */
export function naturalLess(a: string, b: string): boolean {
  const re = /(\d+|\D+)/g;
  const pa = a.match(re) ?? [];
  const pb = b.match(re) ?? [];
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i]!;
    const y = pb[i]!;
    if (x === y) continue;
    const dx = /^\d/.test(x);
    const dy = /^\d/.test(y);
    if (dx && dy) {
      const nx = BigInt(x);
      const ny = BigInt(y);
      if (nx !== ny) return nx < ny;
      return x.length < y.length;
    }
    return x < y;
  }
  return pa.length < pb.length;
}

// ---------------------------------------------------------------------------------------------
// Stats (docker stats)

export const STATS_FORMAT: ListFormat = {
  table: 'table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}',
  headers: {
    Container: 'CONTAINER', ID: 'CONTAINER ID', Name: 'NAME', CPUPerc: 'CPU %', MemUsage: 'MEM USAGE / LIMIT',
    MemPerc: 'MEM %', NetIO: 'NET I/O', BlockIO: 'BLOCK I/O', PIDs: 'PIDS',
  },
};

export interface StatsEntry {
  container: string;
  name: string;
  id: string;
  cpuPercent: number;
  memory: number;
  memoryLimit: number;
  memoryPercent: number;
  networkRx: number;
  networkTx: number;
  blockRead: number;
  blockWrite: number;
  pids: number;
  invalid?: boolean;
}

interface StatsJSON {
  id?: string;
  name?: string;
  cpu_stats?: { cpu_usage?: { total_usage?: number; percpu_usage?: number[] }; system_cpu_usage?: number; online_cpus?: number };
  precpu_stats?: { cpu_usage?: { total_usage?: number }; system_cpu_usage?: number };
  memory_stats?: { usage?: number; limit?: number; stats?: Record<string, number> };
  networks?: Record<string, { rx_bytes?: number; tx_bytes?: number }>;
  blkio_stats?: { io_service_bytes_recursive?: Array<{ op: string; value: number }> | null };
  pids_stats?: { current?: number };
}

/** The numbers docker's stats helpers compute from one /containers/{id}/stats sample. */
export function statsEntry(container: string, s: StatsJSON): StatsEntry {
  const cpu = s.cpu_stats ?? {};
  const pre = s.precpu_stats ?? {};
  const cpuDelta = (cpu.cpu_usage?.total_usage ?? 0) - (pre.cpu_usage?.total_usage ?? 0);
  const systemDelta = (cpu.system_cpu_usage ?? 0) - (pre.system_cpu_usage ?? 0);
  const online = cpu.online_cpus || cpu.cpu_usage?.percpu_usage?.length || 0;
  const cpuPercent = systemDelta > 0 && cpuDelta > 0 ? (cpuDelta / systemDelta) * online * 100 : 0;
  const mem = s.memory_stats ?? {};
  const usage = mem.usage ?? 0;
  // Page cache is not the container's memory: v1 reports total_inactive_file, v2 inactive_file.
  const inactive = mem.stats?.total_inactive_file ?? mem.stats?.inactive_file;
  const memory = inactive !== undefined && inactive < usage ? usage - inactive : usage;
  const limit = mem.limit ?? 0;
  let rx = 0;
  let tx = 0;
  for (const n of Object.values(s.networks ?? {})) {
    rx += n.rx_bytes ?? 0;
    tx += n.tx_bytes ?? 0;
  }
  let read = 0;
  let write = 0;
  for (const e of s.blkio_stats?.io_service_bytes_recursive ?? []) {
    const op = e.op.toLowerCase();
    if (op === 'read') read += e.value;
    if (op === 'write') write += e.value;
  }
  return {
    container,
    name: (s.name ?? '').replace(/^\//, ''),
    id: s.id ?? '',
    cpuPercent,
    memory,
    memoryLimit: limit,
    memoryPercent: limit ? (memory / limit) * 100 : 0,
    networkRx: rx,
    networkTx: tx,
    blockRead: read,
    blockWrite: write,
    pids: s.pids_stats?.current ?? 0,
  };
}

export function statsRow(e: StatsEntry, trunc: boolean): Struct {
  const pct = (n: number) => (e.invalid ? '--' : `${n.toFixed(2)}%`);
  return new Struct('*formatter.statsContext', {
    Container: () => e.container,
    Name: () => (e.invalid ? '--' : e.name || '--'),
    ID: () => (trunc ? truncateId(e.id) : e.id),
    CPUPerc: () => pct(e.cpuPercent),
    MemUsage: () => (e.invalid ? '-- / --' : `${bytesSize(e.memory)} / ${bytesSize(e.memoryLimit)}`),
    MemPerc: () => pct(e.memoryPercent),
    NetIO: () => (e.invalid ? '--' : `${humanSize(e.networkRx)} / ${humanSize(e.networkTx)}`),
    BlockIO: () => (e.invalid ? '--' : `${humanSize(e.blockRead)} / ${humanSize(e.blockWrite)}`),
    PIDs: () => (e.invalid ? '--' : String(e.pids)),
  });
}
