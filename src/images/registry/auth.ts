import { BadRequestError } from '../../util/errors.js';

/** Credentials as the Engine API carries them (X-Registry-Auth, POST /auth). */
export interface AuthConfig {
  username?: string;
  password?: string;
  /** "user:password" in base64, as config.json stores it. */
  auth?: string;
  serveraddress?: string;
  identitytoken?: string;
  registrytoken?: string;
}

/** Decodes X-Registry-Auth: base64url (some clients send standard base64) of the JSON AuthConfig. */
export function decodeRegistryAuth(header: string | string[] | undefined): AuthConfig | undefined {
  const h = Array.isArray(header) ? header[0] : header;
  if (!h || !h.trim()) return undefined;
  let cfg: AuthConfig;
  try {
    cfg = JSON.parse(Buffer.from(h.trim().replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8')) as AuthConfig;
  } catch {
    throw new BadRequestError('invalid X-Registry-Auth header: not base64-encoded JSON');
  }
  if (typeof cfg !== 'object' || cfg === null) return undefined;
  return normaliseAuth(cfg);
}

export function normaliseAuth(cfg: AuthConfig): AuthConfig | undefined {
  const out = { ...cfg };
  if (!out.username && out.auth) {
    const plain = Buffer.from(out.auth, 'base64').toString('utf8');
    const i = plain.indexOf(':');
    if (i > 0) { out.username = plain.slice(0, i); out.password = plain.slice(i + 1); }
  }
  if (!out.username && !out.identitytoken && !out.registrytoken) return undefined;
  return out;
}

export function encodeRegistryAuth(cfg: AuthConfig): string {
  return Buffer.from(JSON.stringify(cfg)).toString('base64url');
}

export interface Challenge { scheme: 'bearer' | 'basic'; params: Record<string, string> }

/** Parses `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (or Basic realm="…"). */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'bearer' && scheme !== 'basic') return undefined;
  const params: Record<string, string> = {};
  const re = /(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]!))) params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  return { scheme, params };
}
