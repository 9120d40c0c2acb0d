import { randomBytes, createHash } from 'node:crypto';

/** A 64-hex-digit id, as Docker uses for containers, exec sessions and networks. */
export function newId(): string {
  return randomBytes(32).toString('hex');
}

export function shortId(id: string): string {
  return id.replace(/^sha256:/, '').slice(0, 12);
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
