import type { VolumeRecord } from '../../engine/volumes.js';
import { BadRequestError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { boolParam, checkFilterKeys, labelsMatch, parseFilters, readRequiredJsonBody, sendEmpty, sendJson } from '../http.js';
import type { Router } from '../router.js';
import { validateVolumeCreate } from '../validate/index.js';

export function volumeRoutes(r: Router, api: ApiContext): void {
  const store = () => api.engine.volumes;
  const inUse = (v: VolumeRecord) => api.engine.volumeUsers(v.Name).length > 0;

  r.get('/volumes', (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    checkFilterKeys(filters, ['name', 'label', 'dangling', 'driver']);
    const f = (k: string) => filters.get(k);
    const dangling = f('dangling')?.[0];
    if (dangling !== undefined && !['true', 'false', '1', '0'].includes(dangling)) throw new BadRequestError(`invalid filter 'dangling=${dangling}'`);
    const list = store().list().filter((v) => {
      if (f('name') && !f('name')!.some((n) => v.Name.includes(n))) return false;
      if (f('driver') && !f('driver')!.includes(v.Driver)) return false;
      if (f('label') && !labelsMatch(v.Labels, f('label')!)) return false;
      if (dangling !== undefined && inUse(v) === boolParam(dangling)) return false;
      return true;
    });
    sendJson(ctx.res, 200, { Volumes: list.map((v) => store().inspect(v)), Warnings: null });
  });
  r.post('/volumes/create', async (ctx) => {
    const body = await readRequiredJsonBody(ctx.req);
    validateVolumeCreate(body);
    const { volume, created } = await store().create({
      Name: body.Name as string | undefined, Driver: body.Driver as string | undefined,
      DriverOpts: body.DriverOpts as Record<string, string> | undefined, Labels: body.Labels as Record<string, string> | undefined,
    });
    if (created) api.engine.events.emit('volume', 'create', volume.Name, { driver: volume.Driver });
    sendJson(ctx.res, 201, store().inspect(volume));
  });
  r.get('/volumes/{name}', (ctx) => sendJson(ctx.res, 200, store().inspect(store().get(ctx.params.name!))));
  r.delete('/volumes/{name}', async (ctx) => {
    const name = ctx.params.name!;
    // force: a volume that does not exist is not an error (it never makes an in-use one removable).
    if (!store().find(name) && boolParam(ctx.query.get('force'))) return sendEmpty(ctx.res, 204);
    await store().remove(name, api.engine.volumeUsers(name));
    api.engine.events.emit('volume', 'destroy', name, { driver: 'local' });
    sendEmpty(ctx.res, 204);
  });
  r.post('/volumes/prune', async (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    checkFilterKeys(filters, ['label', 'label!']);
    const deleted: string[] = [];
    for (const v of store().list()) {
      if (inUse(v) || !labelsMatch(v.Labels, filters.get('label') ?? [])) continue;
      if ((filters.get('label!') ?? []).some((l) => labelsMatch(v.Labels, [l]))) continue;
      await store().remove(v.Name, []);
      api.engine.events.emit('volume', 'destroy', v.Name, { driver: 'local' });
      deleted.push(v.Name);
    }
    sendJson(ctx.res, 200, { VolumesDeleted: deleted.length ? deleted : null, SpaceReclaimed: 0 });
  });
}
