import { posix } from 'node:path';
import type { OciMount } from '../runtime/spec.js';
import { BadRequestError } from '../util/errors.js';

/**
 * One mount as berth keeps it, in the shape of inspect's MountPoint. A volume mount's Name is empty
 * for an anonymous volume, which the engine makes at create; NoCopy skips filling a new volume
 * with what the image has at the destination.
 */
export interface MountSpec {
  Type: 'bind' | 'volume' | 'tmpfs';
  Name?: string;
  Source: string;
  Destination: string;
  Mode: string;
  RW: boolean;
  Propagation: string;
  NoCopy?: boolean;
  /** tmpfs only: mount options after Docker's defaults (noexec, nosuid, nodev). */
  TmpfsOptions?: string[];
}

const PROPAGATIONS = ['private', 'rprivate', 'shared', 'rshared', 'slave', 'rslave'];

/**
 * HostConfig.Binds (`/host:/ctr[:opts]` or `volume:/ctr[:opts]`) and HostConfig.Mounts of type bind,
 * volume or tmpfs. Other mount types (npipe, cluster) are refused rather than ignored: a container
 * must never start without a mount its user asked for.
 */
export function parseMounts(binds: string[] | null | undefined, mounts: unknown): MountSpec[] {
  const out: MountSpec[] = [];
  for (const spec of binds ?? []) {
    const parts = spec.split(':');
    if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1]) throw new BadRequestError(`invalid volume specification: '${spec}'`);
    const [src, dst, mode = ''] = parts as [string, string, string?];
    const volume = !src.startsWith('/');
    if (!dst.startsWith('/')) throw new BadRequestError(`invalid volume specification: '${spec}': invalid mount config: destination must be an absolute path`);
    const opts = mode ? mode.split(',') : [];
    let rw = true;
    let propagation = volume ? '' : 'rprivate';
    let noCopy = false;
    for (const o of opts) {
      if (o === 'ro') rw = false;
      else if (o === 'rw') rw = true;
      else if (o === 'nocopy' && volume) noCopy = true;
      else if (PROPAGATIONS.includes(o) && !volume) propagation = o;
      else if (!['z', 'Z', 'consistent', 'cached', 'delegated'].includes(o)) throw new BadRequestError(`invalid mode: ${o}`);
    }
    if (volume) out.push({ Type: 'volume', Name: src, Source: '', Destination: posix.normalize(dst), Mode: mode || 'z', RW: rw, Propagation: '', NoCopy: noCopy });
    else out.push({ Type: 'bind', Source: posix.normalize(src), Destination: posix.normalize(dst), Mode: mode, RW: rw, Propagation: propagation });
  }
  if (mounts !== undefined && mounts !== null) {
    if (!Array.isArray(mounts)) throw new BadRequestError('invalid type for field HostConfig.Mounts: expected array');
    for (const m of mounts as Array<Record<string, unknown>>) {
      const type = m.Type ?? 'volume';
      if (type !== 'bind' && type !== 'volume' && type !== 'tmpfs') throw new BadRequestError(`mount type ${String(type)} is not supported by berth yet (only bind, volume and tmpfs)`);
      const src = m.Source;
      const dst = m.Target;
      if (type === 'tmpfs') {
        if (src) throw new BadRequestError('invalid mount config for type "tmpfs": source must not be specified');
        if (typeof dst !== 'string' || !dst.startsWith('/')) throw new BadRequestError('invalid mount config for type "tmpfs": invalid mount path: destination must be an absolute path');
        const to = (m.TmpfsOptions ?? {}) as Record<string, unknown>;
        const opts: string[] = [];
        if (typeof to.SizeBytes === 'number' && to.SizeBytes > 0) opts.push(`size=${to.SizeBytes}`);
        if (typeof to.Mode === 'number' && to.Mode > 0) opts.push(`mode=${to.Mode.toString(8)}`);
        if (m.ReadOnly === true) opts.push('ro');
        out.push({ Type: 'tmpfs', Source: '', Destination: posix.normalize(dst), Mode: '', RW: m.ReadOnly !== true, Propagation: '', TmpfsOptions: opts });
        continue;
      }
      if (type === 'volume') {
        if (src !== undefined && src !== null && src !== '' && (typeof src !== 'string' || src.startsWith('/'))) throw new BadRequestError('invalid mount config for type "volume": invalid volume name');
        if (typeof dst !== 'string' || !dst.startsWith('/')) throw new BadRequestError('invalid mount config for type "volume": invalid mount path: destination must be an absolute path');
        const vo = (m.VolumeOptions ?? {}) as Record<string, unknown>;
        const drv = (vo.DriverConfig ?? {}) as Record<string, unknown>;
        if ((drv.Name && drv.Name !== 'local') || (drv.Options && Object.keys(drv.Options as object).length)) {
          throw new BadRequestError('invalid mount config for type "volume": berth has only the local volume driver, without options');
        }
        out.push({ Type: 'volume', Name: (src as string | undefined) ?? '', Source: '', Destination: posix.normalize(dst), Mode: 'z', RW: m.ReadOnly !== true, Propagation: '', NoCopy: vo.NoCopy === true });
        continue;
      }
      if (typeof src !== 'string' || !src.startsWith('/')) throw new BadRequestError('invalid mount config for type "bind": invalid mount path: source must be an absolute path');
      if (typeof dst !== 'string' || !dst.startsWith('/')) throw new BadRequestError('invalid mount config for type "bind": invalid mount path: destination must be an absolute path');
      const bo = (m.BindOptions ?? {}) as Record<string, unknown>;
      const propagation = typeof bo.Propagation === 'string' && bo.Propagation ? bo.Propagation : 'rprivate';
      if (!PROPAGATIONS.includes(propagation)) throw new BadRequestError(`invalid propagation mode: ${propagation}`);
      out.push({ Type: 'bind', Source: posix.normalize(src), Destination: posix.normalize(dst), Mode: '', RW: m.ReadOnly !== true, Propagation: propagation });
    }
  }
  const seen = new Set<string>();
  for (const m of out) {
    if (seen.has(m.Destination)) throw new BadRequestError(`Duplicate mount point: ${m.Destination}`);
    seen.add(m.Destination);
  }
  return out;
}

/** HostConfig.Tmpfs: `{"/run": "rw,size=64m"}` (compose's and `docker run --tmpfs`'s form). */
export function parseTmpfs(tmpfs: Record<string, string> | null | undefined): MountSpec[] {
  return Object.entries(tmpfs ?? {}).map(([dst, options]) => {
    if (!dst.startsWith('/')) throw new BadRequestError(`invalid tmpfs mount: destination must be an absolute path: ${dst}`);
    const opts = options ? options.split(',').filter(Boolean) : [];
    return { Type: 'tmpfs' as const, Source: '', Destination: posix.normalize(dst), Mode: options, RW: !opts.includes('ro'), Propagation: '', TmpfsOptions: opts };
  });
}

/** Docker's MergeTmpfsOptions: later options win, so `exec` lifts the default `noexec`. */
export function tmpfsOptions(extra: string[]): string[] {
  const pairs: Record<string, string> = { exec: 'noexec', noexec: 'exec', suid: 'nosuid', nosuid: 'suid', dev: 'nodev', nodev: 'dev', ro: 'rw', rw: 'ro' };
  const out: string[] = [];
  for (const o of ['noexec', 'nosuid', 'nodev', ...extra]) {
    const key = o.includes('=') ? o.slice(0, o.indexOf('=') + 1) : undefined;
    const i = key ? out.findIndex((x) => x.startsWith(key)) : out.findIndex((x) => x === o || x === pairs[o]);
    if (i >= 0) out.splice(i, 1);
    out.push(o);
  }
  return out;
}

/** The OCI spec's entries (Source filled in for volumes); runc makes the mount points inside the root safely. */
export function ociMounts(mounts: MountSpec[]): OciMount[] {
  return mounts.map((b) => b.Type === 'tmpfs' ? { destination: b.Destination, type: 'tmpfs', source: 'tmpfs', options: tmpfsOptions(b.TmpfsOptions ?? []) } : ({
    destination: b.Destination, type: 'bind', source: b.Source,
    options: ['rbind', b.Propagation || 'rprivate', ...(b.RW ? [] : ['ro'])],
  }));
}
