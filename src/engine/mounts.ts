import { posix } from 'node:path';
import type { OciMount } from '../runtime/spec.js';
import { BadRequestError } from '../util/errors.js';

/** One bind mount as berth keeps it, in the shape of inspect's MountPoint. */
export interface BindMount { Type: 'bind'; Source: string; Destination: string; Mode: string; RW: boolean; Propagation: string }

const PROPAGATIONS = ['private', 'rprivate', 'shared', 'rshared', 'slave', 'rslave'];

/**
 * HostConfig.Binds (`/host:/container[:ro|rw,…]`) and HostConfig.Mounts of type bind. berth has no
 * volume store yet, so a named volume or another mount type is refused rather than ignored: a
 * container must never start without a mount its user asked for.
 */
export function parseMounts(binds: string[] | null | undefined, mounts: unknown): BindMount[] {
  const out: BindMount[] = [];
  for (const spec of binds ?? []) {
    const parts = spec.split(':');
    if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1]) throw new BadRequestError(`invalid volume specification: '${spec}'`);
    const [src, dst, mode = ''] = parts as [string, string, string?];
    if (!src.startsWith('/')) throw new BadRequestError(`invalid volume specification: '${spec}': berth does not support named volumes yet, use an absolute host path`);
    if (!dst.startsWith('/')) throw new BadRequestError(`invalid volume specification: '${spec}': invalid mount config: destination must be an absolute path`);
    const opts = mode ? mode.split(',') : [];
    let rw = true;
    let propagation = 'rprivate';
    for (const o of opts) {
      if (o === 'ro') rw = false;
      else if (o === 'rw') rw = true;
      else if (PROPAGATIONS.includes(o)) propagation = o;
      else if (!['z', 'Z', 'nocopy', 'consistent', 'cached', 'delegated'].includes(o)) throw new BadRequestError(`invalid mode: ${o}`);
    }
    out.push({ Type: 'bind', Source: posix.normalize(src), Destination: posix.normalize(dst), Mode: mode, RW: rw, Propagation: propagation });
  }
  if (mounts !== undefined && mounts !== null) {
    if (!Array.isArray(mounts)) throw new BadRequestError('invalid type for field HostConfig.Mounts: expected array');
    for (const m of mounts as Array<Record<string, unknown>>) {
      const type = m.Type ?? 'volume';
      if (type !== 'bind') throw new BadRequestError(`mount type ${String(type)} is not supported by berth yet (only bind)`);
      const src = m.Source;
      const dst = m.Target;
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

/** The OCI spec's entries for the binds; runc makes the mount points inside the root safely. */
export function ociMounts(binds: BindMount[]): OciMount[] {
  return binds.map((b) => ({
    destination: b.Destination, type: 'bind', source: b.Source,
    options: ['rbind', b.Propagation, ...(b.RW ? [] : ['ro'])],
  }));
}
