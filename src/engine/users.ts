import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { BadRequestError } from '../util/errors.js';
import type { ProcessUser } from '../runtime/spec.js';

async function readDb(rootfs: string, file: string): Promise<string[][]> {
  try {
    const text = await fs.readFile(join(rootfs, 'etc', file), 'utf8');
    return text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':'));
  } catch {
    return [];
  }
}

/**
 * Resolves Docker's `--user` forms (name, uid, name:group, uid:gid) against the container's own
 * /etc/passwd and /etc/group, as Docker does, including supplementary groups.
 */
export async function resolveUser(rootfs: string, spec: string): Promise<ProcessUser> {
  if (!spec) spec = '0';
  const [userPart, groupPart] = spec.split(':', 2) as [string, string | undefined];
  const passwd = await readDb(rootfs, 'passwd');
  const groups = await readDb(rootfs, 'group');
  let uid: number;
  let gid: number;
  let userName: string | undefined;
  const entry = /^\d+$/.test(userPart)
    ? passwd.find((p) => p[2] === userPart)
    : passwd.find((p) => p[0] === userPart);
  if (entry) {
    uid = Number(entry[2]);
    gid = Number(entry[3]);
    userName = entry[0];
  } else if (/^\d+$/.test(userPart)) {
    uid = Number(userPart);
    gid = 0;
  } else {
    throw new BadRequestError(`unable to find user ${userPart}: no matching entries in passwd file`);
  }
  if (groupPart !== undefined && groupPart !== '') {
    if (/^\d+$/.test(groupPart)) gid = Number(groupPart);
    else {
      const g = groups.find((x) => x[0] === groupPart);
      if (!g) throw new BadRequestError(`unable to find group ${groupPart}: no matching entries in group file`);
      gid = Number(g[2]);
    }
  }
  const additionalGids = userName
    ? groups.filter((g) => (g[3] ?? '').split(',').includes(userName!)).map((g) => Number(g[2])).filter((g) => g !== gid)
    : [];
  return additionalGids.length ? { uid, gid, additionalGids } : { uid, gid };
}
