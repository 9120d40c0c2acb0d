import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { run, runOk } from '../util/exec.js';

/**
 * Content-addressed layers: each uncompressed layer tarball is stored once under its diff id
 * (sha256 of the uncompressed tar), next to its unpacked tree for overlayfs. The tarball is kept
 * byte for byte so `save` reproduces the same digests.
 */

type Compression = 'gzip' | 'bzip2' | 'xz' | 'zstd' | 'none';

export function detectCompression(head: Buffer): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.subarray(0, 3).toString() === 'BZh') return 'bzip2';
  if (head[0] === 0xfd && head.subarray(1, 6).toString() === '7zXZ\0') return 'xz';
  if (head.readUInt32LE?.(0) === 0xfd2fb528) return 'zstd';
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
  tarPath(diffId: string): string { return join(this.layerDir(diffId), 'layer.tar'); }
  rootPath(diffId: string): string { return join(this.layerDir(diffId), 'root'); }

  async has(diffId: string): Promise<boolean> {
    try { await fs.access(join(this.layerDir(diffId), 'complete')); return true; } catch { return false; }
  }

  async size(diffId: string): Promise<number> {
    try { return (await fs.stat(this.tarPath(diffId))).size; } catch { return 0; }
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
        await pipeline([createReadStream(path), ...stages, hasher, createWriteStream(tmpTar, { mode: 0o600 })] as unknown as Parameters<typeof pipeline>[0][]);
      } else {
        const tool = { bzip2: 'bzip2', xz: 'xz', zstd: 'zstd' }[compression];
        const child = spawn(tool, ['-dc', path], { stdio: ['ignore', 'pipe', 'pipe'] });
        let err = '';
        child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
        const done = new Promise<number>((r) => child.on('close', (c) => r(c ?? 1)));
        await pipeline(child.stdout, hasher, createWriteStream(tmpTar, { mode: 0o600 }));
        if ((await done) !== 0) throw new Error(`${tool}: ${err.trim()}`);
      }
      const diffId = `sha256:${hasher.hash.digest('hex')}`;
      if (expected && expected !== diffId) {
        throw new Error(`layer digest mismatch: expected ${expected}, got ${diffId}`);
      }
      if (!(await this.has(diffId))) await this.install(diffId, tmpTar);
      return diffId;
    } finally {
      await fs.rm(tmpTar, { force: true });
    }
  }

  /**
   * Adds a gzip or plain layer while it streams in (a registry download): the uncompressed bytes are
   * hashed, kept as layer.tar and unpacked by GNU tar at once, so unpacking overlaps the download.
   * verify() runs after the last byte and before the layer is put in place; if it or the diff id
   * check fails, nothing is stored.
   */
  async addFromStream(input: Readable, expected: string, verify: () => void): Promise<string> {
    const staging = join(this.tmpDir, `unpack-${expected.slice(7, 19)}-${Math.random().toString(36).slice(2)}`);
    await fs.mkdir(join(staging, 'root'), { recursive: true, mode: 0o755 });
    const tar = spawn('tar', ['--numeric-owner', '-xpf', '-', '-C', join(staging, 'root')], { stdio: ['pipe', 'ignore', 'pipe'] });
    const tarDone = new Promise<number>((r) => tar.on('close', (c) => r(c ?? 1)));
    try {
      let err = '';
      tar.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      tar.stdin.on('error', () => undefined);
      // The first bytes say whether the blob is gzip (almost always) or a plain tar.
      const it = input[Symbol.asyncIterator]();
      const first = await it.next();
      const head: Buffer = first.done ? Buffer.alloc(0) : (first.value as Buffer);
      const compression = detectCompression(head);
      if (compression !== 'gzip' && compression !== 'none') throw new Error(`${compression} layers cannot be streamed`);
      async function* all(): AsyncGenerator<Buffer> {
        if (head.length) yield head;
        for (;;) { const n = await it.next(); if (n.done) return; yield n.value as Buffer; }
      }
      const file = createWriteStream(join(staging, 'layer.tar'), { mode: 0o600 });
      const fileDone = new Promise<void>((res, rej) => { file.on('close', res); file.on('error', rej); });
      // Each chunk goes to layer.tar and to tar's stdin; the next comes when both took it.
      const tee = new Writable({
        write(chunk: Buffer, _e, cb) {
          let pending = 2;
          let failed = false;
          const done = (e?: Error | null) => {
            if (failed) return;
            if (e) { failed = true; cb(e); return; }
            if (--pending === 0) cb();
          };
          file.write(chunk, done);
          if (!tar.stdin.write(chunk)) tar.stdin.once('drain', () => done()); else done();
        },
        final(cb) { tar.stdin.end(); file.end(); cb(); },
      });
      const hasher = new HashStream();
      const stages: NodeJS.ReadWriteStream[] = compression === 'gzip' ? [createGunzip()] : [];
      await pipeline([Readable.from(all()), ...stages, hasher, tee] as unknown as Parameters<typeof pipeline>[0][]);
      await fileDone;
      const code = await tarDone;
      verify();
      const diffId = `sha256:${hasher.hash.digest('hex')}`;
      if (diffId !== expected) throw new Error(`layer digest mismatch: expected ${expected}, got ${diffId}`);
      if (code !== 0) throw new Error(`tar: ${err.trim() || `exit ${code}`}`);
      if (await this.has(diffId)) return diffId;
      await convertWhiteouts(join(staging, 'root'));
      await fs.writeFile(join(staging, 'complete'), '');
      await fs.rm(this.layerDir(diffId), { recursive: true, force: true });
      await fs.rename(staging, this.layerDir(diffId));
      return diffId;
    } finally {
      // tar must be gone before its directory is removed under it.
      if (tar.exitCode === null && tar.signalCode === null) tar.kill('SIGKILL');
      await tarDone;
      await fs.rm(staging, { recursive: true, force: true });
    }
  }

  /** Unpacks into a temp directory and renames into place last, so a crash never leaves half a layer. */
  private async install(diffId: string, tarFile: string): Promise<void> {
    const staging = join(this.tmpDir, `unpack-${diffId.slice(7, 19)}-${Math.random().toString(36).slice(2)}`);
    await fs.mkdir(join(staging, 'root'), { recursive: true, mode: 0o755 });
    try {
      await runOk('tar', ['--numeric-owner', '-xpf', tarFile, '-C', join(staging, 'root')]);
      await convertWhiteouts(join(staging, 'root'));
      await fs.rename(tarFile, join(staging, 'layer.tar'));
      await fs.writeFile(join(staging, 'complete'), '');
      await fs.rm(this.layerDir(diffId), { recursive: true, force: true });
      await fs.rename(staging, this.layerDir(diffId));
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
