import type { ServiceControl } from '../../cluster/services.js';
import { formatEntry } from '../../engine/logs.js';
import { frame, MULTIPLEXED_STREAM } from '../hijack.js';
import { boolParam } from '../http.js';
import type { RequestContext } from '../router.js';
import { logParams } from '../validate/params.js';

/** Docker's log details: `k=v,k=v` (values query-escaped, keys sorted), a space, then the line. */
function details(attrs: Record<string, string>): string {
  return Object.keys(attrs).sort().map((k) => `${k}=${encodeURIComponent(attrs[k]!)}`).join(',');
}

/**
 * GET /services/{id}/logs and /tasks/{id}/logs on a manager: every task's lines from the node
 * that runs it, each framed as Docker's (one frame per line, the task's node, service and task ids
 * as details, which the docker CLI turns into `NAME.SLOT.ID@NODE |`). The details are always
 * there for the CLI to parse (it asks for them); timestamps come first when asked.
 */
export async function serviceLogsRoute(services: ServiceControl, kind: 'service' | 'task', ctx: RequestContext): Promise<void> {
  const { follow, timestamps, ...rest } = logParams(ctx.query);
  const withDetails = boolParam(ctx.query.get('details'));
  // The nodes read the lines plain; the timestamps are put in front of the details here.
  const query = { ...rest, timestamps: false };
  services.assertManager();
  const ac = new AbortController();
  const res = ctx.res;
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    res.writeHead(200, { 'Content-Type': MULTIPLEXED_STREAM });
  };
  res.on('close', () => ac.abort());
  try {
    const { missing } = await services.logs(kind, ctx.params.id!, query, follow, ({ task, entry }) => {
      start();
      const prefix = withDetails ? `${details({ 'com.docker.swarm.node.id': task.NodeID, 'com.docker.swarm.service.id': task.ServiceID, 'com.docker.swarm.task.id': task.ID })} ` : '';
      const line = Buffer.concat([Buffer.from(prefix), entry.data]);
      res.write(frame(entry.stream, formatEntry({ ...entry, data: line }, timestamps)));
    }, ac.signal);
    if (missing.length) console.error(`berthd: ${kind} logs of ${ctx.params.id}: no answer from node(s) ${missing.join(', ')} (down, or gone silent)`);
  } catch (e) {
    // Before the first line the error is the answer (404 for an unknown service); after it, the stream just ends.
    if (!started) throw e;
  }
  // A service without a line answers an empty stream (the headers alone), as Docker's.
  start();
  res.end();
}
