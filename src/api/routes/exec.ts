import { BadRequestError } from '../../util/errors.js';
import type { ApiContext } from '../context.js';
import { frame, hijack, MULTIPLEXED_STREAM, RAW_STREAM, readUpgradeBody } from '../hijack.js';
import { intParam, parseJsonBody, readBodyBuffer, readRequiredJsonBody, sendEmpty, sendJson } from '../http.js';
import type { RequestContext, Router } from '../router.js';
import { validateExecCreate } from '../validate/index.js';

async function startExec(api: ApiContext, ctx: RequestContext): Promise<void> {
  const raw = ctx.upgrade ? (await readUpgradeBody(ctx)).body : await readBodyBuffer(ctx.req);
  const body = parseJsonBody(raw);
  const detach = !!body.Detach;
  const rec = api.execs.get(ctx.params.id!);
  const tty = body.Tty !== undefined ? !!body.Tty : rec.ProcessConfig.tty;
  const size = Array.isArray(body.ConsoleSize) ? (body.ConsoleSize as number[]) : undefined;
  const proc = await api.execs.start(ctx.params.id!, { tty, rows: size?.[0], cols: size?.[1] });
  if (detach) {
    proc.stdin.end();
    proc.stdout.resume();
    proc.stderr?.resume();
    if (ctx.upgrade) ctx.upgrade.socket.end();
    else sendEmpty(ctx.res, 200);
    return;
  }
  const { socket, head } = hijack(ctx, tty ? RAW_STREAM : MULTIPLEXED_STREAM);
  // A client that does not read makes the process wait on its output, as Docker's io.Copy does:
  // writing on regardless held all of `cat /dev/zero` in berthd (1 GB in 4 s).
  const out = (stream: 1 | 2, src: NodeJS.ReadableStream) => (d: Buffer) => {
    if (!socket.writable || socket.write(tty ? d : frame(stream, d))) return;
    src.pause();
    const resume = () => { socket.off('drain', resume); socket.off('close', resume); src.resume(); };
    socket.on('drain', resume);
    socket.on('close', resume);
  };
  proc.stdout.on('data', out(1, proc.stdout));
  if (proc.stderr) proc.stderr.on('data', out(2, proc.stderr));
  if (rec.OpenStdin) {
    if (head.length) proc.stdin.write(head);
    // Bounded as attach's stdin is (containers.ts): a process that does not read stops the client.
    socket.pipe(proc.stdin);
  } else {
    proc.stdin.end();
    socket.resume();
  }
  socket.on('error', () => { /* client went away; the process keeps running as in Docker */ });
  const streamsDone = Promise.all([
    new Promise<void>((r) => (proc.stdout.readableEnded ? r() : proc.stdout.once('end', () => r()))),
    proc.stderr ? new Promise<void>((r) => (proc.stderr!.readableEnded ? r() : proc.stderr!.once('end', () => r()))) : Promise.resolve(),
  ]);
  await proc.exited.catch(() => undefined);
  await streamsDone;
  if (socket.writable) socket.end();
}

export function execRoutes(r: Router, api: ApiContext): void {
  r.post('/containers/{id}/exec', async (ctx) => {
    const body = await readRequiredJsonBody(ctx.req);
    validateExecCreate(body);
    sendJson(ctx.res, 201, api.execs.create(ctx.params.id!, body));
  });
  r.post('/exec/{id}/start', (ctx) => startExec(api, ctx));
  r.post('/exec/{id}/resize', (ctx) => {
    const h = intParam(ctx.query.get('h'), 'h');
    const w = intParam(ctx.query.get('w'), 'w');
    if (h === undefined || w === undefined) throw new BadRequestError('h and w are required');
    api.execs.resize(ctx.params.id!, h, w);
    sendEmpty(ctx.res, 201);
  });
  r.get('/exec/{id}/json', (ctx) => sendJson(ctx.res, 200, api.execs.inspect(ctx.params.id!)));
}
