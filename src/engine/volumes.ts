import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { readJson, removeStaleTemps, writeJsonAtomic } from '../store/atomic.js';
import { BadRequestError, ConflictError, NotFoundError } from '../util/errors.js';

/** One volume of Docker's `local` driver as berth keeps it: a directory under berth's root. */
export interface VolumeRecord {
  Name: string;
  Driver: 'local';
  CreatedAt: string;
  Labels: Record<string, string>;
  Options: Record<string, string>;
  /** Made for one container (`-v /path`, an image's VOLUME): `rm -v` removes it with the container. */
  Anonymous: boolean;
}

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** A volume is a directory named after it, so the name is one path component (NAME_MAX). */
const MAX_NAME = 255;

export function checkVolumeName(name: string): void {
  // Docker's local driver (volume/local validateName) checks the length 1 first, with these words.
  if (name.length === 1) throw new BadRequestError(`create ${name}: volume name is too short, names should be at least two alphanumeric characters`);
  // Docker 20.10 passes longer names on to mkdir and answers ENAMETOOLONG with a 500; the
  // message here does not echo all of a name that can be megabytes long.
  if (Buffer.byteLength(name) > MAX_NAME) {
    throw new BadRequestError(`create ${name.slice(0, 64)}...: volume name is too long (${Buffer.byteLength(name)} bytes), names can be at most ${MAX_NAME} bytes`);
  }
  if (!NAME.test(name)) {
    throw new BadRequestError(`create ${name}: "${name}" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path`);
  }
}

/**
 * Named and anonymous volumes (`<root>/volumes/<name>/_data`, metadata next to it written
 * atomically). Only the local driver without options: a mount type or driver berth cannot
 * honour is refused rather than silently replaced by a plain directory.
 */
export class VolumeStore {
  private readonly volumes = new Map<string, VolumeRecord>();

  constructor(private readonly dir: string) {}

  async load(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const name of await fs.readdir(this.dir)) {
      await removeStaleTemps(join(this.dir, name));
      const v = await readJson<VolumeRecord>(join(this.dir, name, 'volume.json'));
      // A directory without its record is a create that crashed half-way: nothing uses it yet.
      if (!v) await fs.rm(join(this.dir, name), { recursive: true, force: true });
      else this.volumes.set(v.Name, v);
    }
  }

  list(): VolumeRecord[] { return [...this.volumes.values()]; }

  find(name: string): VolumeRecord | undefined { return this.volumes.get(name); }

  get(name: string): VolumeRecord {
    const v = this.volumes.get(name);
    if (!v) throw new NotFoundError(`get ${name}: no such volume`);
    return v;
  }

  mountpoint(name: string): string { return join(this.dir, name, '_data'); }

  /** Docker answers a create of an existing name with that volume (labels as they were). */
  async create(opts: { Name?: string; Driver?: string; DriverOpts?: Record<string, string> | null; Labels?: Record<string, string> | null; anonymous?: boolean }): Promise<{ volume: VolumeRecord; created: boolean }> {
    const driver = opts.Driver || 'local';
    if (driver !== 'local') throw new NotFoundError(`error looking up volume plugin ${driver}: plugin "${driver}" not found`);
    if (opts.DriverOpts && Object.keys(opts.DriverOpts).length) {
      throw new BadRequestError(`berth's local volume driver takes no options yet (got ${Object.keys(opts.DriverOpts).join(', ')})`);
    }
    const name = opts.Name || randomBytes(32).toString('hex');
    checkVolumeName(name);
    const existing = this.volumes.get(name);
    if (existing) return { volume: existing, created: false };
    const v: VolumeRecord = {
      Name: name, Driver: 'local', CreatedAt: new Date().toISOString(), Labels: opts.Labels ?? {}, Options: {}, Anonymous: !!opts.anonymous,
    };
    await fs.mkdir(this.mountpoint(name), { recursive: true, mode: 0o755 });
    await writeJsonAtomic(join(this.dir, name, 'volume.json'), v);
    this.volumes.set(name, v);
    return { volume: v, created: true };
  }

  /** `usedBy`: ids of containers (any state) that mount it; Docker refuses unless forced… and even then. */
  async remove(name: string, usedBy: string[]): Promise<void> {
    this.get(name);
    if (usedBy.length) throw new ConflictError(`remove ${name}: volume is in use - [${usedBy.join(', ')}]`);
    this.volumes.delete(name);
    await fs.rm(join(this.dir, name), { recursive: true, force: true });
  }

  inspect(v: VolumeRecord): object {
    return {
      CreatedAt: v.CreatedAt, Driver: v.Driver, Labels: v.Labels, Mountpoint: this.mountpoint(v.Name),
      Name: v.Name, Options: v.Options, Scope: 'local',
    };
  }

  async isEmpty(name: string): Promise<boolean> {
    return (await fs.readdir(this.mountpoint(name))).length === 0;
  }
}
