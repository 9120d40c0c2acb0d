import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { writeLayer } from '../../builder/layer.js';
import { applyChanges } from '../../images/changes.js';
import type { LocalImageStore } from '../../images/store.js';
import type { ImageConfigFile, ImageRuntimeConfig } from '../../images/types.js';
import { parseReference } from '../../images/reference.js';
import { BadRequestError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { boolParam, readJsonBody, sendJson } from '../http.js';
import type { Router } from '../router.js';

/**
 * POST /commit (`docker commit`): the container's own layer (its overlay upper dir, deletions as
 * whiteouts) on top of its image's layers, with the container's config, the body's overrides and
 * `changes` (Dockerfile instructions) applied in that order, as Docker does.
 */
export function commitRoutes(r: Router, api: ApiContext): void {
  r.post('/commit', async (ctx) => {
    const q = ctx.query;
    const ref = q.get('container');
    if (!ref) throw new BadRequestError('No container specified');
    const body = await readJsonBody(ctx.req) as ImageRuntimeConfig;
    const repo = q.get('repo');
    const tag = repo ? `${repo}${q.get('tag') ? `:${q.get('tag')}` : ''}` : undefined;
    if (tag) parseReference(tag);
    const engine = api.engine;
    const c = engine.get(ref);
    const images = engine.images as LocalImageStore;
    const base = images.get(c.Image);
    // Docker pauses a running container for the copy so its files are consistent (pause=false to skip).
    const pause = boolParam(q.get('pause'), true) && c.State.Running && !c.State.Paused;
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
    for (const [k, v] of Object.entries(body)) if (v !== undefined && v !== null && k !== 'Image' && k !== 'Hostname') (config as Record<string, unknown>)[k] = v;
    config = applyChanges(config, q.getAll('changes').flatMap((x) => x.split('\n')).filter((x) => x.trim() !== ''));
    const created = new Date().toISOString();
    const comment = q.get('comment') ?? '';
    const author = q.get('author') ?? '';
    const file: ImageConfigFile & Record<string, unknown> = {
      architecture: base.config.architecture, os: base.config.os, created, config,
      container: c.Id, container_config: { ...config },
      ...(author ? { author } : {}), ...(comment ? { comment } : {}),
      rootfs: { type: 'layers', diff_ids: [...base.config.rootfs.diff_ids, diffId] },
      history: [...(base.config.history ?? []), { created, created_by: [c.Path, ...c.Args].join(' '), ...(comment ? { comment } : {}) }],
    };
    const rec = await images.commitImage(Buffer.from(JSON.stringify(file)), tag ? [tag] : []);
    engine.containerEvent(c, 'commit', { comment });
    sendJson(ctx.res, 201, { Id: rec.id });
  });
}
