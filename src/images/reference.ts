import { BadRequestError } from '../util/errors.js';

/** A parsed image reference: repository (as Docker shows it, Hub names short) and tag or digest. */
export interface Reference { repo: string; tag?: string; digest?: string }

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;

/**
 * Splits "name[:tag][@digest]" where the tag's colon comes after the last slash (a registry's port
 * colon does not); nothing is checked or normalised. The CLI uses it to show references as given.
 */
export function splitReference(ref: string): { name: string; tag?: string; digest?: string } {
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > slash) return { name: rest.slice(0, colon), tag: rest.slice(colon + 1), digest };
  return { name: rest, digest };
}

/**
 * Parses and normalises a reference the way Docker does for local lookups:
 * "docker.io/library/busybox" and "busybox" are the same repository, shown as "busybox".
 */
export function parseReference(ref: string): Reference {
  const { name: rest, digest, tag: given } = splitReference(ref);
  if (digest !== undefined && !/^sha256:[0-9a-f]{64}$/.test(digest)) throw new BadRequestError(`invalid reference format: ${ref}`);
  let tag = given;
  if (tag !== undefined && !TAG.test(tag)) throw new BadRequestError(`invalid reference format: ${ref}`);
  if (rest === '') throw new BadRequestError(`invalid reference format: ${ref}`);
  if (rest !== rest.toLowerCase()) throw new BadRequestError(`invalid reference format: repository name must be lowercase`);
  const parts = rest.split('/');
  const first = parts[0]!;
  const hasHost = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  const path = hasHost ? parts.slice(1) : parts;
  if (path.length === 0 || path.some((p) => !COMPONENT.test(p))) throw new BadRequestError(`invalid reference format: ${ref}`);
  let repo = rest;
  if (hasHost && (first === 'docker.io' || first === 'index.docker.io' || first === 'registry-1.docker.io')) repo = path.join('/');
  if (repo.startsWith('library/') && repo.split('/').length === 2) repo = repo.slice('library/'.length);
  if (!tag && !digest) tag = 'latest';
  return { repo, tag, digest };
}

/** "repo:tag" as RepoTags shows it. */
export function formatRepoTag(r: Reference): string {
  return `${r.repo}:${r.tag ?? 'latest'}`;
}
