import { spawn } from 'node:child_process';
import { constants, promises as fs, type Stats } from 'node:fs';
import { posix } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import type * as TarStream from 'tar-stream';
import { requireCjs } from '../util/cjs.js';

const tarStream = requireCjs('tar-stream') as typeof TarStream;
import { BadRequestError, NotFoundError } from '../util/errors.js';

/**
 * `docker cp` underneath (/containers/{id}/archive): paths inside a container's root filesystem,
 * resolved the way the container would see them. Symlinks are followed *inside* the root, never out
 * of it: the container owns every link in its filesystem and berthd runs as root on the host.
 */

const MAX_LINKS = 255;

/**
 * Resolves `path` (absolute in the container) to a host path under `root`. With `followLast` false
 * the final component stays as it is (a symlink is then the link itself, as `docker cp` copies it).
 */
export async function resolveInRoot(root: string, path: string, followLast = true): Promise<string> {
  const pending = posix.normalize('/' + path).split('/').filter(Boolean);
  const done: string[] = [];
  let links = 0;
  while (pending.length) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') { done.pop(); continue; }
    const host = posix.join(root, ...done, part);
    let st: Stats | undefined;
    try { st = await fs.lstat(host); } catch { st = undefined; }
    if (st?.isSymbolicLink() && (pending.length > 0 || followLast)) {
      if (++links > MAX_LINKS) throw new BadRequestError(`too many levels of symbolic links: ${path}`);
      const target = await fs.readlink(host);
      // An absolute target starts again at the container's root, a relative one from here.
      if (target.startsWith('/')) done.length = 0;
      pending.unshift(...target.split('/').filter(Boolean));
      continue;
    }
    done.push(part);
  }
  return posix.join(root, ...done);
}

/** Go's os.FileMode bits, which the docker CLI reads from X-Docker-Container-Path-Stat. */
function goMode(st: Stats): number {
  let m = st.mode & 0o777;
  if (st.mode & 0o4000) m += 2 ** 23;
  if (st.mode & 0o2000) m += 2 ** 22;
  if (st.mode & 0o1000) m += 2 ** 20;
  if (st.isDirectory()) m += 2 ** 31;
  else if (st.isSymbolicLink()) m += 2 ** 27;
  else if (st.isFIFO()) m += 2 ** 25;
  else if (st.isSocket()) m += 2 ** 24;
  else if (st.isCharacterDevice()) m += 2 ** 26 + 2 ** 21;
  else if (st.isBlockDevice()) m += 2 ** 26;
  return m;
}

export interface PathStat { name: string; size: number; mode: number; mtime: string; linkTarget: string }

/** The stat Docker returns for a container path (HEAD and the header of GET). */
export async function statPath(root: string, path: string, container: string): Promise<{ host: string; stat: PathStat }> {
  const dotted = /(^|\/)\.$/.test(path);
  const host = await resolveInRoot(root, path, dotted);
  let st: Stats;
  try { st = await fs.lstat(host); } catch { throw new NotFoundError(`Could not find the file ${path} in container ${container}`); }
  let linkTarget = '';
  if (st.isSymbolicLink()) linkTarget = '/' + posix.relative(root, await resolveInRoot(root, path, true));
  const name = dotted ? '.' : posix.basename(posix.normalize('/' + path)) || '/';
  return { host, stat: { name, size: st.size, mode: goMode(st), mtime: st.mtime.toISOString(), linkTarget } };
}

/**
 * A tar of `host` (already resolved inside the root) named by its last component, as Docker sends
 * it: GNU tar never follows symlinks inside the tree without -h, so nothing outside the root is read.
 */
export function packPath(host: string, contentsOnly = false): Readable {
  // `docker cp CTR:DIR/. DEST` asks for DIR's contents: entries named "./…", which the CLI renames.
  const [dir, name] = contentsOnly ? [host, '.'] : [posix.dirname(host), posix.basename(host)];
  return tarOf(dir, [name]);
}

/** GNU tar of `names` under `dir` as a stream; tar's failure becomes the stream's error, and closing the stream stops tar. */
function tarOf(dir: string, names: string[]): Readable {
  const child = spawn('tar', ['-C', dir, '--numeric-owner', '-cf', '-', '--', ...names], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = new PassThrough();
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  child.stdout.pipe(out, { end: false });
  child.on('close', (code) => {
    if (code !== 0) out.destroy(new Error(`tar: ${err.trim() || `exit ${code}`}`));
    else out.end();
  });
  out.on('close', () => { if (child.exitCode === null) child.kill(); });
  return out;
}

/** The first `n` bytes of a stream (fewer at its end), put back so that reading starts over. */
async function peek(input: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let len = 0;
  while (len < n) {
    const chunk = input.read() as Buffer | null;
    if (chunk) { chunks.push(chunk); len += chunk.length; continue; }
    if (input.readableEnded) break;
    await new Promise<void>((resolve, reject) => {
      const done = () => { input.off('readable', done); input.off('end', done); input.off('error', fail); resolve(); };
      const fail = (e: Error) => { done(); reject(e); };
      input.on('readable', done);
      input.on('end', done);
      input.on('error', fail);
    });
  }
  const head = Buffer.concat(chunks);
  if (head.length) input.unshift(head);
  return head;
}

/** gzip, bzip2 or xz as the API allows, or the plain tar. */
async function decompressed(input: Readable): Promise<Readable> {
  const first = await peek(input, 6);
  if (first[0] === 0x1f && first[1] === 0x8b) return input.pipe(createGunzip());
  const tool = first.subarray(0, 3).toString() === 'BZh' ? 'bzip2'
    : first.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) ? 'xz' : undefined;
  if (!tool) return input;
  const child = spawn(tool, ['-dc'], { stdio: ['pipe', 'pipe', 'ignore'] });
  input.pipe(child.stdin);
  child.stdin.on('error', () => undefined);
  return child.stdout;
}

/**
 * Unpacks a tar into `dir` (a container path), entry by entry through resolveInRoot, so that
 * neither `..` in a name nor a symlink already in the container can put a file outside the root.
 */
export async function extractInto(root: string, dir: string, input: Readable, opts: { container: string; noOverwriteDirNonDir: boolean; copyUIDGID: boolean }): Promise<void> {
  const destHost = await resolveInRoot(root, dir, true);
  let st: Stats;
  try { st = await fs.stat(destHost); } catch { throw new NotFoundError(`Could not find the file ${dir} in container ${opts.container}`); }
  if (!st.isDirectory()) throw new BadRequestError('not a directory');
  const destInRoot = '/' + posix.relative(root, destHost);
  const extract = tarStream.extract();
  const dirTimes: Array<[string, Date]> = [];
  extract.on('entry', (header, stream, next) => {
    void (async () => {
      const name = posix.normalize('/' + header.name).replace(/\/+$/, '');
      if (name === '/' && header.type === 'directory') { stream.resume(); return; }
      const inContainer = posix.join(destInRoot, name);
      const parent = await resolveInRoot(root, posix.dirname(inContainer), true);
      const target = posix.join(parent, posix.basename(inContainer));
      let existing: Stats | undefined;
      try { existing = await fs.lstat(target); } catch { existing = undefined; }
      if (existing && opts.noOverwriteDirNonDir && existing.isDirectory() !== (header.type === 'directory')) {
        throw new BadRequestError(`cannot overwrite ${existing.isDirectory() ? 'directory' : 'non-directory'} "${inContainer}" with ${existing.isDirectory() ? 'non-directory' : 'directory'} "${name}"`);
      }
      if (existing && !(existing.isDirectory() && header.type === 'directory')) await fs.rm(target, { recursive: true, force: true });
      await fs.mkdir(parent, { recursive: true });
      const mode = (header.mode ?? 0o644) & 0o7777;
      switch (header.type) {
        case 'directory':
          if (!existing?.isDirectory()) await fs.mkdir(target, { mode });
          await fs.chmod(target, mode);
          if (header.mtime) dirTimes.push([target, header.mtime]);
          stream.resume();
          break;
        case 'file':
        case 'contiguous-file': {
          // 'wx' with O_NOFOLLOW: the name was just removed, so a link raced in by the container fails.
          const fh = await fs.open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
          try {
            for await (const chunk of stream) await fh.write(chunk as Buffer);
            await fh.chmod(mode);
          } finally {
            await fh.close();
          }
          if (header.mtime) await fs.utimes(target, header.mtime, header.mtime);
          break;
        }
        case 'symlink':
          await fs.symlink(header.linkname ?? '', target);
          stream.resume();
          break;
        case 'link': {
          // In archive order, as tar does: the target is an earlier entry (or a file already in the
          // container), resolved inside the root; a later entry of the same name replaces the link.
          const from = await resolveInRoot(root, posix.join(destInRoot, posix.normalize('/' + (header.linkname ?? ''))), false);
          stream.resume();
          try {
            await fs.link(from, target);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new BadRequestError(`hard link ${name} to ${header.linkname ?? ''}: no such file in the archive or the container`);
            throw e;
          }
          break;
        }
        default:
          // Devices, fifos: not something `docker cp` users send; skipped rather than made as root.
          stream.resume();
      }
      if (header.type !== 'link' && header.type !== 'symlink' && header.type !== 'directory' && header.type !== 'file' && header.type !== 'contiguous-file') return;
      if (header.type !== 'link') {
        const uid = opts.copyUIDGID ? header.uid ?? 0 : 0;
        const gid = opts.copyUIDGID ? header.gid ?? 0 : 0;
        await fs.lchown(target, uid, gid);
      }
    })().then(() => next(), (e: unknown) => { stream.resume(); next(e as Error); });
  });
  const source = await decompressed(input);
  try {
    await pipeline(source, extract);
  } catch (e) {
    throw archiveError(e, root);
  }
  for (const [d, t] of dirTimes.reverse()) await fs.utimes(d, t, t).catch(() => undefined);
}

/**
 * What an archive's own content caused (a corrupt header, a name too long, an entry where a
 * directory must be, a link loop) is the client's error: a 400 naming the entry's path inside the
 * container, never the host path under berth's root. Anything else stays a server error.
 */
function archiveError(e: unknown, root: string): unknown {
  if (e instanceof BadRequestError || e instanceof NotFoundError) return e;
  const err = e as NodeJS.ErrnoException & { dest?: string };
  const inContainer = (p?: string) => (p && p.startsWith(root) ? p.slice(root.length) || '/' : p ?? '');
  // zlib's codes (Z_DATA_ERROR, Z_BUF_ERROR): a gzip stream that is not one.
  if (err.code?.startsWith('Z_')) return new BadRequestError(`error extracting the archive: gzip: ${err.message}`);
  if (err.code && ['ENAMETOOLONG', 'ENOENT', 'EEXIST', 'ENOTDIR', 'EISDIR', 'ELOOP', 'EINVAL', 'ENOTEMPTY', 'EMLINK', 'EXDEV', 'EPERM'].includes(err.code)) {
    return new BadRequestError(`error extracting the archive: ${err.code} at ${inContainer(err.path)}${err.dest ? ` (to ${inContainer(err.dest)})` : ''}`);
  }
  // tar-stream's parse errors ("Invalid tar header…", "Unexpected end of data").
  if (err instanceof Error && !err.code && /tar|header|end of data|checksum/i.test(err.message)) return new BadRequestError(`error extracting the archive: ${err.message}`);
  return e;
}

/** The whole root filesystem as a tar (`docker export`), names relative to the root as Docker writes them. */
export async function packRootfs(root: string): Promise<Readable> {
  return tarOf(root, (await fs.readdir(root)).sort());
}

export interface Change { Path: string; Kind: 0 | 1 | 2 }

/** Mount targets the runtime makes for every container: Docker's init layer hides them from `diff` too. */
const HIDDEN = new Set(['/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/dev', '/proc', '/sys', '/dev/console', '/dev/pts', '/dev/shm', '/dev/mqueue']);

/**
 * `docker diff` from the overlay's upper directory: a whiteout (a 0:0 character device) is a
 * deletion, a name that some image layer has is a modification, anything else was added.
 */
export async function changes(upper: string, lowers: string[]): Promise<Change[]> {
  const out: Change[] = [];
  const inLower = async (rel: string) => {
    for (const l of lowers) {
      try { await fs.lstat(posix.join(l, rel)); return true; } catch { /* not in this layer */ }
    }
    return false;
  };
  const walk = async (rel: string): Promise<void> => {
    let entries: string[];
    try { entries = await fs.readdir(posix.join(upper, rel)); } catch { return; }
    for (const name of entries) {
      const path = posix.join(rel, name);
      const st = await fs.lstat(posix.join(upper, path));
      const whiteout = st.isCharacterDevice() && st.rdev === 0;
      if (!HIDDEN.has(path)) out.push({ Path: path, Kind: whiteout ? 2 : (await inLower(path)) ? 0 : 1 });
      if (st.isDirectory()) await walk(path);
    }
  };
  await walk('/');
  return out.sort((a, b) => a.Path.localeCompare(b.Path));
}

/** Bytes of the files under a directory (du's apparent size), 0 when it is missing. */
export async function dirSize(path: string): Promise<number> {
  const r = await new Promise<string>((resolve) => {
    const child = spawn('du', ['-sb', '--', path], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('close', () => resolve(out));
    child.on('error', () => resolve(''));
  });
  return Number(r.split('\t')[0]) || 0;
}
