import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, type Gunzip } from 'node:zlib';
import { run, runOk } from '../util/exec.js';
import { BadRequestError } from '../util/errors.js';
import { untar } from '../util/untar.js';

/**
 * Content-addressed layers, each stored once under its diff id (sha256 of the uncompressed tar)
 * with its unpacked tree for overlayfs. What keeps `save` and `push` exact is one of:
 * - `layer.tar.gz`: the compressed blob exactly as a registry served it (pulled gzip layers). The
 *   digest checks at pull time proved that gunzip of these bytes is the diff id's tar, and
 *   decompression is deterministic, so the tar is regenerated on demand instead of stored twice.
 * - `layer.tar`: the uncompressed tarball byte for byte (import, load, build, commit, and pulled
 *   layers that were plain tars or zstd/xz compressed).
 * A layer is complete only once its directory, with the `complete` marker inside, is renamed
 * into place from the scratch directory, which init() wipes: a crash never leaves half a layer.
 */

/** The content of the `complete` marker (empty in stores made before it carried anything). */
interface LayerMeta {
  /** Bytes of the uncompressed tar, what Docker reports as the layer's size. */
  size: number;
  /** The stored compressed blob, when there is one. */
  blob?: { digest: string; size: number };
}

type Compression = 'gzip' | 'bzip2' | 'xz' | 'zstd' | 'none';

export function detectCompression(head: Buffer): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.subarray(0, 3).toString() === 'BZh') return 'bzip2';
  if (head[0] === 0xfd && head.subarray(1, 6).toString() === '7zXZ\0') return 'xz';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

async function readHead(path: string): Promise<Buffer> {
  const fh = await fs.open(path, 'r');
  try {
    const buf = Buffer.alloc(8);
    const { bytesRead } = await fh.read(buf, 0, 8, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Hashes what flows through, so a digest costs no second pass over the data. */
class HashStream extends Transform {
  readonly hash = createHash('sha256');
  size = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    this.push(chunk);
    cb();
  }
}

/** sha256 of a file, as "sha256:<hex>". */
export async function fileDigest(path: string): Promise<string> {
  const h = new HashStream();
  await pipeline(createReadStream(path), h, async function* (src) { for await (const _ of src) { /* drain */ } });
  return `sha256:${h.hash.digest('hex')}`;
}

export class LayerStore {
  constructor(private readonly dir: string, private readonly tmpDir: string) {}

  layerDir(diffId: string): string { return join(this.dir, diffId.replace(/^sha256:/, '')); }
  private tarPath(diffId: string): string { return join(this.layerDir(diffId), 'layer.tar'); }
  private blobPath(diffId: string): string { return join(this.layerDir(diffId), 'layer.tar.gz'); }
  rootPath(diffId: string): string { return join(this.layerDir(diffId), 'root'); }

  async has(diffId: string): Promise<boolean> {
    try { await fs.access(join(this.layerDir(diffId), 'complete')); return true; } catch { return false; }
  }

  private async meta(diffId: string): Promise<LayerMeta | undefined> {
    try { return JSON.parse(await fs.readFile(join(this.layerDir(diffId), 'complete'), 'utf8')) as LayerMeta; } catch { return undefined; }
  }

  async size(diffId: string): Promise<number> {
    const m = await this.meta(diffId);
    if (m && typeof m.size === 'number') return m.size;
    try { return (await fs.stat(this.tarPath(diffId))).size; } catch { return 0; }
  }

  /** The stored compressed blob of a pulled layer, which push can send as it is. */
  async compressedBlob(diffId: string): Promise<{ path: string; digest: string; size: number } | undefined> {
    const m = await this.meta(diffId);
    if (!m?.blob || !(await fs.access(this.blobPath(diffId)).then(() => true, () => false))) return undefined;
    return { path: this.blobPath(diffId), ...m.blob };
  }

  /** The exact uncompressed tarball whose sha256 is the diff id. */
  tarStream(diffId: string): Readable {
    const tar = this.tarPath(diffId);
    if (existsSync(tar)) return createReadStream(tar);
    const gz = createGunzip({ chunkSize: CHUNK });
    const src = createReadStream(this.blobPath(diffId), { highWaterMark: CHUNK });
    src.on('error', (e) => gz.destroy(e));
    return src.pipe(gz);
  }

  /** Puts the uncompressed tarball at dest (a hard link when one is stored). */
  async exportTar(diffId: string, dest: string): Promise<void> {
    const tar = this.tarPath(diffId);
    if (existsSync(tar)) {
      await fs.link(tar, dest).catch(() => fs.copyFile(tar, dest));
      return;
    }
    await pipeline(this.tarStream(diffId), createWriteStream(dest, { mode: 0o600 }));
  }

  /** Writes a stream to a temp file. */
  async spool(input: Readable): Promise<string> {
    const path = join(this.tmpDir, `spool-${process.pid}-${Math.random().toString(36).slice(2)}`);
    await pipeline(input, createWriteStream(path, { mode: 0o600 }));
    return path;
  }

  /**
   * Adds a layer from a (possibly compressed) tarball file; returns its diff id. When expected is
   * given and the content does not match it, nothing is stored and an error is thrown.
   */
  async addFromFile(path: string, expected?: string): Promise<string> {
    const compression = detectCompression(await readHead(path));
    const tmpTar = join(this.tmpDir, `layer-${process.pid}-${Math.random().toString(36).slice(2)}.tar`);
    const hasher = new HashStream();
    try {
      if (compression === 'none' || compression === 'gzip') {
        const stages: NodeJS.ReadWriteStream[] = compression === 'gzip' ? [createGunzip()] : [];
        await pipeline([createReadStream(path), ...stages, hasher, createWriteStream(tmpTar, { mode: 0o600 })] as unknown as Parameters<typeof pipeline>[0][]).catch((e: NodeJS.ErrnoException) => {
          // zlib's codes (Z_DATA_ERROR, Z_BUF_ERROR) are the data's fault: the client's.
          if (e.code?.startsWith('Z_')) throw new BadRequestError(`invalid tar archive: gzip: ${e.message}`);
          throw e;
        });
      } else {
        const tool = { bzip2: 'bzip2', xz: 'xz', zstd: 'zstd' }[compression];
        const child = spawn(tool, ['-dc', path], { stdio: ['ignore', 'pipe', 'pipe'] });
        let err = '';
        child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
        const done = new Promise<number>((r) => child.on('close', (c) => r(c ?? 1)));
        await pipeline(child.stdout, hasher, createWriteStream(tmpTar, { mode: 0o600 }));
        if ((await done) !== 0) throw new BadRequestError(`invalid tar archive: ${tool}: ${err.trim()}`);
      }
      const diffId = `sha256:${hasher.hash.digest('hex')}`;
      if (expected && expected !== diffId) {
        throw new Error(`layer digest mismatch: expected ${expected}, got ${diffId}`);
      }
      if (!(await this.has(diffId))) await this.install(diffId, tmpTar, hasher.size);
      return diffId;
    } finally {
      await fs.rm(tmpTar, { force: true });
    }
  }

  /** Starts unpacking a gzip or plain layer that is still streaming in (a registry download). */
  async beginStream(expected: string): Promise<StreamingLayer> {
    const staging = await this.staging(expected);
    return new StreamingLayer(staging, expected, async (diffId) => {
      if (await this.has(diffId)) return false;
      await this.place(staging, diffId);
      return true;
    });
  }

  /** A scratch directory (with an empty `root`) to unpack a layer in; init() wipes leftovers. */
  private async staging(diffId: string): Promise<string> {
    const staging = join(this.tmpDir, `unpack-${diffId.slice(7, 19)}-${Math.random().toString(36).slice(2)}`);
    await fs.mkdir(join(staging, 'root'), { recursive: true, mode: 0o755 });
    return staging;
  }

  /** Renames a finished staging directory into place, the last step: a crash never leaves half a layer. */
  private async place(staging: string, diffId: string): Promise<void> {
    await fs.rm(this.layerDir(diffId), { recursive: true, force: true });
    await fs.rename(staging, this.layerDir(diffId));
  }

  /** Unpacks a tar file into a staging directory, then puts the layer in place. */
  private async install(diffId: string, tarFile: string, size: number): Promise<void> {
    const staging = await this.staging(diffId);
    try {
      await untar(tarFile, join(staging, 'root'), ['--numeric-owner', '-p']);
      await convertWhiteouts(join(staging, 'root'));
      await fs.rename(tarFile, join(staging, 'layer.tar'));
      await fs.writeFile(join(staging, 'complete'), JSON.stringify({ size } satisfies LayerMeta));
      await this.place(staging, diffId);
    } catch (e) {
      await fs.rm(staging, { recursive: true, force: true });
      throw e;
    }
  }

  async remove(diffId: string): Promise<void> {
    await fs.rm(this.layerDir(diffId), { recursive: true, force: true });
  }

  async list(): Promise<string[]> {
    try { return (await fs.readdir(this.dir)).map((h) => `sha256:${h}`); } catch { return []; }
  }
}

/**
 * Chunk size for decompression and for reads of stored blobs. zlib's default (16 KiB) means a
 * callback, a hash update and a pipe write per 16 KiB; at 256 KiB a 50 MB pull costs a fraction
 * of the CPU, which on a two-core machine is most of the pull's time.
 */
const CHUNK = 256 << 10;

/**
 * One layer unpacking while its blob streams in: write() takes the blob's bytes as they arrive
 * (gzip or a plain tar, told by the first bytes), gunzips them, hashes the tar for the diff id
 * and feeds GNU tar, which unpacks into a staging directory. Nothing is in the store until
 * install(). An unpacking failure does not stop the caller's download: later bytes are dropped
 * and finish() reports it, so the caller can first check the blob's digest and say which one
 * was wrong.
 */
export class StreamingLayer {
  private readonly tar: ChildProcess;
  private readonly tarDone: Promise<number>;
  private tarErr = '';
  private stdinOpen = true;
  private gunzip?: Gunzip;
  private compression?: Compression;
  private readonly hash = createHash('sha256');
  private size = 0;
  private failed?: Error;
  /** Resolved by fail(), so no writer waits for a 'drain' that will never come. */
  private readonly waiters = new Set<() => void>();
  /** Whiteout names are rare: scanning the tar for ".wh." spares a find over every other layer. */
  private whiteouts = false;
  private tail: Buffer = Buffer.alloc(0);
  private head: Buffer = Buffer.alloc(0);
  private installed = false;

  constructor(private readonly staging: string, private readonly expected: string, private readonly place: (diffId: string) => Promise<boolean>) {
    // A large blocking factor: tar reads the pipe in 128 KiB records instead of 10 KiB ones.
    this.tar = spawn('tar', ['--numeric-owner', '-b', '256', '-xpf', '-', '-C', join(staging, 'root')], { stdio: ['pipe', 'ignore', 'pipe'] });
    this.tarDone = new Promise<number>((r) => this.tar.on('close', (c) => r(c ?? 1)));
    this.tar.on('error', (e) => this.fail(e));
    this.tar.stderr!.on('data', (d: Buffer) => { this.tarErr += d.toString(); });
    // GNU tar may stop reading at the end-of-archive blocks; what follows is still hashed.
    const closed = () => { this.stdinOpen = false; this.release(); };
    this.tar.stdin!.on('error', closed);
    this.tar.stdin!.on('close', closed);
  }

  private release(): void {
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  private fail(e: Error): void {
    this.failed ??= e;
    this.release();
  }

  private wait(stream: NodeJS.EventEmitter, event: string): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => { stream.off(event, done); this.waiters.delete(done); resolve(); };
      this.waiters.add(done);
      stream.once(event, done);
    });
  }

  /** The uncompressed tar: hashed, scanned, and handed to tar. Returns false when tar is full. */
  private out(chunk: Buffer): boolean {
    this.hash.update(chunk);
    this.size += chunk.length;
    if (!this.whiteouts) {
      const joined = this.tail.length ? Buffer.concat([this.tail, chunk.subarray(0, 3)]) : undefined;
      if ((joined && joined.includes('.wh.')) || chunk.includes('.wh.')) this.whiteouts = true;
      this.tail = Buffer.from(chunk.subarray(Math.max(0, chunk.length - 3)));
    }
    if (!this.stdinOpen) return true;
    return this.tar.stdin!.write(chunk);
  }

  /** Takes the next bytes of the blob; the promise, when there is one, is back-pressure. */
  write(chunk: Buffer): Promise<void> | undefined {
    if (this.failed || chunk.length === 0) return undefined;
    if (this.compression !== undefined) return this.push(chunk);
    // The magic numbers need the first few bytes, which may come in more than one chunk.
    this.head = this.head.length ? Buffer.concat([this.head, chunk]) : chunk;
    return this.head.length < 8 ? undefined : this.begin();
  }

  private begin(): Promise<void> | undefined {
    const first = this.head;
    this.head = Buffer.alloc(0);
    this.compression = detectCompression(first);
    if (this.compression === 'gzip') {
      const gz = createGunzip({ chunkSize: CHUNK });
      gz.on('error', (e) => this.fail(e));
      gz.on('data', (c: Buffer) => {
        if (!this.out(c) && this.stdinOpen) {
          gz.pause();
          void this.wait(this.tar.stdin!, 'drain').then(() => gz.resume());
        }
      });
      this.gunzip = gz;
    } else if (this.compression !== 'none') {
      this.fail(new Error(`${this.compression} layers cannot be streamed`));
      return undefined;
    }
    return this.push(first);
  }

  private push(chunk: Buffer): Promise<void> | undefined {
    if (this.gunzip) return this.gunzip.write(chunk) ? undefined : this.wait(this.gunzip, 'drain');
    return this.out(chunk) || !this.stdinOpen ? undefined : this.wait(this.tar.stdin!, 'drain');
  }

  /** After the last byte: waits for tar and checks the diff id; throws if anything went wrong. */
  async finish(): Promise<void> {
    if (this.compression === undefined && this.head.length && !this.failed) {
      const w = this.begin();
      if (w) await w;
    }
    if (this.gunzip && !this.failed) {
      const gz = this.gunzip;
      await new Promise<void>((resolve) => {
        gz.once('end', resolve);
        gz.once('error', () => resolve());
        gz.end();
      });
    }
    this.tar.stdin!.end();
    const code = await this.tarDone;
    if (this.failed) throw this.failed;
    const diffId = `sha256:${this.hash.digest('hex')}`;
    if (diffId !== this.expected) throw new Error(`layer digest mismatch: expected ${this.expected}, got ${diffId}`);
    if (code !== 0) throw new Error(`tar: ${this.tarErr.trim() || `exit ${code}`}`);
  }

  /**
   * Puts the finished layer in the store, with the blob it came from (moved, not copied) when it
   * was gzip; a plain tar blob is the layer's tarball itself.
   */
  async install(blobPath: string, blob: { digest: string; size: number }): Promise<void> {
    if (this.whiteouts) await convertWhiteouts(join(this.staging, 'root'));
    const meta: LayerMeta = { size: this.size };
    if (this.compression === 'gzip') {
      await fs.rename(blobPath, join(this.staging, 'layer.tar.gz'));
      meta.blob = blob;
    } else {
      await fs.rename(blobPath, join(this.staging, 'layer.tar'));
    }
    await fs.writeFile(join(this.staging, 'complete'), JSON.stringify(meta));
    this.installed = await this.place(this.expected);
  }

  /** Stops tar and removes whatever was unpacked (a no-op once installed). */
  async abort(): Promise<void> {
    this.gunzip?.destroy();
    if (this.tar.exitCode === null && this.tar.signalCode === null) this.tar.kill('SIGKILL');
    // tar must be gone before its directory is removed under it.
    await this.tarDone;
    this.release();
    if (!this.installed) await fs.rm(this.staging, { recursive: true, force: true });
  }
}

/**
 * OCI layers mark deletions with ".wh.NAME" files and opaque directories with ".wh..wh..opq";
 * overlayfs wants a 0:0 character device and the trusted.overlay.opaque xattr instead.
 */
export async function convertWhiteouts(root: string): Promise<void> {
  const found = await run('find', [root, '-name', '.wh.*']);
  const paths = found.stdout.split('\n').filter(Boolean);
  for (const p of paths) {
    const slash = p.lastIndexOf('/');
    const dir = p.slice(0, slash);
    const name = p.slice(slash + 1);
    await fs.rm(p, { force: true });
    if (name === '.wh..wh..opq') {
      await runOk('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', dir]);
    } else {
      await runOk('mknod', [join(dir, name.slice(4)), 'c', '0', '0']);
    }
  }
}
