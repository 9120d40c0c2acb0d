import type { Duplex } from 'node:stream';
import type { RequestContext } from './router.js';
import { JSON_BODY_LIMIT, PayloadTooLargeError } from './http.js';

/**
 * Takes over the connection for a raw stream (attach, exec start), as Docker does. Clients that
 * asked to upgrade get "101 UPGRADED"; others get "200 OK" and the raw stream on the same socket.
 * Returns the socket and any bytes already read past the request (the start of stdin).
 */
export function hijack(ctx: RequestContext, contentType: string): { socket: Duplex; head: Buffer } {
  let socket: Duplex;
  let head: Buffer;
  if (ctx.upgrade) {
    socket = ctx.upgrade.socket;
    head = ctx.upgrade.head;
    socket.write(`HTTP/1.1 101 UPGRADED\r\nContent-Type: ${contentType}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n`);
  } else {
    socket = ctx.req.socket;
    head = Buffer.alloc(0);
    // Leave the HTTP machinery: from here on the socket carries the raw stream.
    ctx.res.detachSocket(ctx.req.socket);
    socket.write(`HTTP/1.1 200 OK\r\nContent-Type: ${contentType}\r\n\r\n`);
  }
  (socket as unknown as { setTimeout?: (ms: number) => void }).setTimeout?.(0);
  (socket as unknown as { setNoDelay?: (b: boolean) => void }).setNoDelay?.(true);
  return { socket, head };
}

/** Docker's stdcopy frame: stream byte, three zero bytes, big-endian payload length, payload. */
export function frame(stream: 0 | 1 | 2, data: Buffer): Buffer {
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(data.length, 4);
  return Buffer.concat([header, data]);
}

export const RAW_STREAM = 'application/vnd.docker.raw-stream';
export const MULTIPLEXED_STREAM = 'application/vnd.docker.multiplexed-stream';

/**
 * On an upgraded request Node stops parsing after the headers, so a JSON body (exec start's) comes
 * in `head` and then on the socket; read exactly Content-Length bytes and keep the rest as stdin.
 */
export async function readUpgradeBody(ctx: RequestContext): Promise<{ body: Buffer; rest: Buffer }> {
  const up = ctx.upgrade!;
  const length = Number(ctx.req.headers['content-length'] ?? 0);
  if (length > JSON_BODY_LIMIT) throw new PayloadTooLargeError(JSON_BODY_LIMIT, length);
  let buf = up.head;
  if (buf.length < length) {
    buf = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [buf];
      let size = buf.length;
      const onData = (d: Buffer) => {
        chunks.push(d);
        size += d.length;
        if (size >= length) {
          up.socket.off('data', onData);
          up.socket.pause();
          resolve(Buffer.concat(chunks));
        }
      };
      up.socket.on('data', onData);
      up.socket.once('error', reject);
    });
  }
  up.head = buf.subarray(length);
  return { body: buf.subarray(0, length), rest: up.head };
}
