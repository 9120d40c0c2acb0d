import { createHash, randomBytes } from 'node:crypto';

/**
 * Identifiers and join tokens in Docker's forms, so scripts that parse them keep working: node and
 * cluster IDs are 25 base-36 characters (swarmkit identity.NewID), tokens are
 * SWMTKN-1-<CA digest, 50 base-36>-<secret, 25 base-36> (swarmkit ca.GenerateJoinToken).
 */

function base36(buf: Buffer, width: number): string {
  return BigInt(`0x${buf.toString('hex')}`).toString(36).padStart(width, '0').slice(-width);
}

export function newNodeId(): string {
  return base36(randomBytes(16), 25);
}

/** The digest a joiner pins: sha256 of the CA certificate's DER, in base 36 as Docker writes it. */
export function caDigest(caDer: Buffer): string {
  return base36(createHash('sha256').update(caDer).digest(), 50);
}

export function newJoinToken(caDer: Buffer): string {
  return `SWMTKN-1-${caDigest(caDer)}-${base36(randomBytes(16), 25)}`;
}

export interface ParsedToken { digest: string; secret: string }

/** Docker's check of the token's form; the secret is only judged by a manager. */
export function parseJoinToken(token: string): ParsedToken | undefined {
  const m = /^SWMTKN-1-([0-9a-z]{50})-([0-9a-z]{25})$/.exec(token);
  return m ? { digest: m[1]!, secret: m[2]! } : undefined;
}

/** Go's RFC 3339 with nanoseconds, as Docker's JSON times look. */
export function goTime(d: Date = new Date()): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000000Z');
}
