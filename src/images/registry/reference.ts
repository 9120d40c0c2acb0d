import { BadRequestError } from '../../util/errors.js';
import { parseReference } from '../reference.js';

/** A reference split the way the distribution API needs it. */
export interface RemoteRef {
  /** Registry host[:port] as the user names it ("docker.io" for Docker Hub). */
  domain: string;
  /** Repository path on that registry ("library/nginx"). */
  path: string;
  tag?: string;
  digest?: string;
  /** The repository as the local store shows it ("nginx", "localhost:5000/x"). */
  local: string;
}

export const DOCKER_HUB = 'docker.io';

/**
 * Normalises like Docker: "nginx" → docker.io/library/nginx:latest, "user/app" → docker.io/user/app,
 * "localhost:5000/x" and "registry.example/x" keep their host. A digest wins over a tag.
 */
export function parseRemote(ref: string): RemoteRef {
  const r = parseReference(ref);
  const parts = r.repo.split('/');
  const first = parts[0]!;
  const hasHost = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  const domain = hasHost ? first : DOCKER_HUB;
  const path = hasHost ? parts.slice(1).join('/') : parts.length === 1 ? `library/${r.repo}` : r.repo;
  return { domain, path, local: r.repo, ...(r.digest ? { digest: r.digest } : { tag: r.tag ?? 'latest' }) };
}

/** Where the API lives: Docker Hub's names are not its API host. */
export function endpointHost(domain: string): string {
  return domain === DOCKER_HUB || domain === 'index.docker.io' ? 'registry-1.docker.io' : domain;
}

/** "docker.io/library/nginx" for messages, as Docker prints a repository. */
export function fullName(r: RemoteRef): string {
  return `${r.domain}/${r.path}`;
}

/** The API's fromImage + tag, where tag may also be a digest. */
export function joinFromImage(fromImage: string, tag: string | null): string {
  if (!tag) return fromImage;
  if (/^sha256:/.test(tag)) return `${fromImage}@${tag}`;
  if (fromImage.includes('@')) throw new BadRequestError(`invalid reference format: both a digest and tag ${tag} given`);
  return `${fromImage}:${tag}`;
}
