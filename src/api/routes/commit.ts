import { commitContainer } from '../../engine/commit.js';
import type { ImageRuntimeConfig } from '../../images/types.js';
import { BadRequestError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { boolParam, readJsonBody, sendJson } from '../http.js';
import type { Router } from '../router.js';

/** POST /commit (`docker commit`): parses the query and body; the workflow is src/engine/commit.ts. */
export function commitRoutes(r: Router, api: ApiContext): void {
  r.post('/commit', async (ctx) => {
    const q = ctx.query;
    const ref = q.get('container');
    if (!ref) throw new BadRequestError('No container specified');
    const body = await readJsonBody(ctx.req) as ImageRuntimeConfig;
    const repo = q.get('repo');
    const tag = repo ? `${repo}${q.get('tag') ? `:${q.get('tag')}` : ''}` : undefined;
    const rec = await commitContainer(api.engine, ref, {
      ...(tag ? { tag } : {}),
      ...(q.get('comment') !== null ? { comment: q.get('comment')! } : {}),
      ...(q.get('author') !== null ? { author: q.get('author')! } : {}),
      pause: boolParam(q.get('pause'), true),
      config: body ?? {},
      changes: q.getAll('changes').flatMap((x) => x.split('\n')).filter((x) => x.trim() !== ''),
    });
    sendJson(ctx.res, 201, { Id: rec.id });
  });
}
