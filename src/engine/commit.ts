import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { writeLayer } from '../builder/layer.js';
import { applyChanges } from '../images/changes.js';
import { parseReference } from '../images/reference.js';
import type { ImageConfigFile, ImageRecord, ImageRuntimeConfig } from '../images/types.js';
import type { Engine } from './engine.js';

export interface CommitOptions {
  /** "repo[:tag]" to tag the new image with. */
  tag?: string;
  comment?: string;
  author?: string;
  /** Freeze a running container during the copy (Docker's default). */
  pause: boolean;
  /** Overrides of the container's config (the request body). */
  config: ImageRuntimeConfig;
  /** Dockerfile instructions applied last (`--change`). */
  changes: string[];
}

/**
 * `docker commit`: the container's own layer (its overlay upper dir, deletions as whiteouts) on
 * top of its image's layers, with the container's config, the caller's overrides and `changes`
 * applied in that order, as Docker does.
 */
export async function commitContainer(engine: Engine, ref: string, o: CommitOptions): Promise<ImageRecord> {
  if (o.tag) parseReference(o.tag);
  const c = engine.get(ref);
  const images = engine.images;
  const base = images.get(c.Image);
  // Docker pauses a running container for the copy so its files are consistent.
  const pause = o.pause && c.State.Running && !c.State.Paused;
  if (pause) await engine.pause(c.Id);
  const tmp = images.scratchPath('commit');
  let diffId: string;
  try {
    await writeLayer(tmp, [{ src: join(engine.bundleDir(c), 'diff'), dest: '' }], { whiteouts: true });
    diffId = await images.addLayer(tmp);
  } finally {
    await fs.rm(tmp, { force: true });
    if (pause) await engine.unpause(c.Id).catch(() => undefined);
  }
  const cc = c.Config;
  let config: ImageRuntimeConfig = {
    ...(base.config.config ?? {}),
    User: cc.User, Env: cc.Env, Cmd: cc.Cmd, Entrypoint: cc.Entrypoint, WorkingDir: cc.WorkingDir,
    ExposedPorts: cc.ExposedPorts ?? null, Volumes: cc.Volumes, Labels: cc.Labels,
    ...(cc.StopSignal ? { StopSignal: cc.StopSignal } : {}),
    ...(cc.Healthcheck?.Test ? { Healthcheck: cc.Healthcheck as ImageRuntimeConfig['Healthcheck'] } : {}),
  };
  for (const [k, v] of Object.entries(o.config)) if (v !== undefined && v !== null && k !== 'Image' && k !== 'Hostname') (config as Record<string, unknown>)[k] = v;
  config = applyChanges(config, o.changes);
  const created = new Date().toISOString();
  const comment = o.comment ?? '';
  const author = o.author ?? '';
  const file: ImageConfigFile & Record<string, unknown> = {
    architecture: base.config.architecture, os: base.config.os, created, config,
    container: c.Id, container_config: { ...config },
    ...(author ? { author } : {}), ...(comment ? { comment } : {}),
    rootfs: { type: 'layers', diff_ids: [...base.config.rootfs.diff_ids, diffId] },
    history: [...(base.config.history ?? []), { created, created_by: [c.Path, ...c.Args].join(' '), ...(comment ? { comment } : {}) }],
  };
  const rec = await images.commitImage(Buffer.from(JSON.stringify(file)), o.tag ? [o.tag] : []);
  engine.containerEvent(c, 'commit', { comment });
  return rec;
}
