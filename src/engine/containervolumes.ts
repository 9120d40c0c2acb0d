import { promises as fs } from 'node:fs';
import { runOk } from '../util/exec.js';
import { errorMessage } from '../util/errors.js';
import { resolveInRoot } from './archive.js';
import type { EventBus } from './events.js';
import { parseMounts, type MountSpec } from './mounts.js';
import type { ContainerRecord, HostConfig } from './types.js';
import { checkVolumeName, type VolumeStore } from './volumes.js';

/** Containers' use of volumes: made at create, mounted at start, removed with `rm -v`. */
export class ContainerVolumes {
  constructor(readonly store: VolumeStore, private readonly events: EventBus, private readonly containers: () => ContainerRecord[]) {}

  /**
   * Named volumes a create mentions are made if missing (as Docker does); each anonymous one
   * (`--mount type=volume` without a source, `-v /path`, the image's VOLUME) gets a new volume.
   * Returns destination → name of the anonymous ones, which the container record keeps.
   */
  async createFor(hc: HostConfig, configVolumes: Record<string, object> | null): Promise<Record<string, string>> {
    const mounts = parseMounts(hc.Binds, (hc as { Mounts?: unknown }).Mounts);
    for (const m of mounts) if (m.Type === 'volume' && m.Name) checkVolumeName(m.Name);
    for (const m of mounts) {
      if (m.Type === 'volume' && m.Name) {
        const { created, volume } = await this.store.create({ Name: m.Name });
        if (created) this.events.emit('volume', 'create', volume.Name, { driver: 'local' });
      }
    }
    const anonymous: Record<string, string> = {};
    const taken = new Set(mounts.filter((m) => m.Type === 'bind' || m.Name).map((m) => m.Destination));
    const wanted = [...mounts.filter((m) => m.Type === 'volume' && !m.Name).map((m) => m.Destination), ...Object.keys(configVolumes ?? {})];
    for (const dest of wanted) {
      if (taken.has(dest) || anonymous[dest]) continue;
      const { volume } = await this.store.create({ anonymous: true });
      this.events.emit('volume', 'create', volume.Name, { driver: 'local' });
      anonymous[dest] = volume.Name;
    }
    return anonymous;
  }

  /** Every mount of the container with its host path: binds, named volumes and its anonymous ones. */
  mountsOf(c: ContainerRecord): MountSpec[] {
    const anon = { ...(c.AnonymousVolumes ?? {}) };
    const out = parseMounts(c.HostConfig.Binds, (c.HostConfig as { Mounts?: unknown }).Mounts).map((m) => {
      if (m.Type !== 'volume') return m;
      const name = m.Name || anon[m.Destination] || '';
      delete anon[m.Destination];
      return { ...m, Name: name, Source: name ? this.store.mountpoint(name) : '' };
    }).filter((m) => m.Type === 'tmpfs' || m.Source);
    for (const [dest, name] of Object.entries(anon)) {
      if (out.some((m) => m.Destination === dest)) continue;
      out.push({ Type: 'volume', Name: name, Source: this.store.mountpoint(name), Destination: dest, Mode: '', RW: true, Propagation: '' });
    }
    return out;
  }

  /** Ids of the containers (any state) that mount a volume: such a volume cannot be removed. */
  usersOf(name: string): string[] {
    return this.containers().filter((c) => this.mountsOf(c).some((m) => m.Type === 'volume' && m.Name === name)).map((c) => c.Id);
  }

  /**
   * Docker copies what the image has at a volume's destination into the volume when the volume is
   * still empty (unless nocopy), so `-v data:/etc/app` starts with the image's files.
   */
  async fillNew(rootfs: string, mounts: MountSpec[]): Promise<void> {
    for (const m of mounts) {
      if (m.Type !== 'volume' || m.NoCopy || !m.Name || !(await this.store.isEmpty(m.Name))) continue;
      const from = await resolveInRoot(rootfs, m.Destination);
      const st = await fs.stat(from).catch(() => undefined);
      if (!st?.isDirectory()) continue;
      await runOk('cp', ['-a', '--', `${from}/.`, m.Source]);
    }
  }

  /** `rm -v`: the anonymous volumes go with the container; named ones stay, as with Docker. */
  async removeAnonymous(c: ContainerRecord): Promise<void> {
    for (const name of Object.values(c.AnonymousVolumes ?? {})) {
      if (!this.store.find(name) || this.usersOf(name).length) continue;
      await this.store.remove(name, []).catch((e) => console.error(`berthd: removing volume ${name}: ${errorMessage(e)}`));
      this.events.emit('volume', 'destroy', name, { driver: 'local' });
    }
  }
}
