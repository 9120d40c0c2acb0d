import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { LayerStore } from '../../src/images/layers.js';
import { run, runOk } from '../../src/util/exec.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Streams a layer through StreamingLayer in chunks of `step` bytes, as a download would. */
async function feed(store: LayerStore, blob: Buffer, diffId: string, step: number) {
  const s = await store.beginStream(diffId);
  for (let o = 0; o < blob.length; o += step) {
    const w = s.write(blob.subarray(o, o + step));
    if (w) await w;
  }
  return s;
}

describe('layers streamed from a registry (needs root: unpacks with owners, makes whiteout devices)', () => {
  let dir: string;
  let store: LayerStore;
  let tar: Buffer;
  let diffId: string;

  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-layers-'));
    await fs.mkdir(join(dir, 'layers'));
    await fs.mkdir(join(dir, 'tmp'));
    store = new LayerStore(join(dir, 'layers'), join(dir, 'tmp'));
    // A layer that deletes /gone and hides the old content of /dir, as OCI whiteouts say it.
    const src = join(dir, 'src');
    await fs.mkdir(join(src, 'dir'), { recursive: true });
    await fs.writeFile(join(src, '.wh.gone'), '');
    await fs.writeFile(join(src, 'dir', '.wh..wh..opq'), '');
    await fs.writeFile(join(src, 'dir', 'new'), 'x'.repeat(100_000));
    await runOk('tar', ['-cf', join(dir, 'l.tar'), '-C', src, '.']);
    tar = await fs.readFile(join(dir, 'l.tar'));
    diffId = sha(tar);
  });
  after(async () => { await fs.rm(dir, { recursive: true, force: true }); });
  beforeEach(async () => { await store.remove(diffId); });

  async function staged(): Promise<string[]> { return fs.readdir(join(dir, 'tmp')); }

  /** A whole streamed pull of `blob` in `step`-byte chunks, as the registry client does it; returns the blob's file. */
  async function streamIn(blob: Buffer, step: number, name: string): Promise<string> {
    const s = await feed(store, blob, diffId, step);
    await s.finish();
    const blobFile = join(dir, name);
    await fs.writeFile(blobFile, blob);
    await s.install(blobFile, { digest: sha(blob), size: blob.length });
    await s.abort();
    return blobFile;
  }

  it('a plain tar in 3-byte chunks: whiteout names split across chunks are still found and converted', async () => {
    await streamIn(tar, 3, 'blob-plain');
    assert.ok(await store.has(diffId));
    const root = store.rootPath(diffId);
    const gone = await fs.stat(join(root, 'gone'));
    assert.ok(gone.isCharacterDevice() && gone.rdev === 0, 'a 0:0 character device for overlayfs');
    await assert.rejects(fs.access(join(root, '.wh.gone')));
    assert.equal((await runOk('getfattr', ['--only-values', '-n', 'trusted.overlay.opaque', join(root, 'dir')])), 'y');
    // A plain blob is the tarball itself; no compressed blob to push as is.
    assert.deepEqual(await fs.readFile(join(store.layerDir(diffId), 'layer.tar')), tar);
    assert.equal(await store.compressedBlob(diffId), undefined);
    assert.equal(await store.size(diffId), tar.length);
    assert.deepEqual(await staged(), []);
    await store.remove(diffId);
  });

  it('a gzip blob is stored as it came, and the exact tar (the diff id\'s bytes) is regenerated from it', async () => {
    // Level 1, so the stored bytes cannot be mistaken for a fresh gzip at Node's default level.
    const gz = gzipSync(tar, { level: 1 });
    assert.notEqual(sha(gz), sha(gzipSync(tar)));
    const blobFile = await streamIn(gz, 4096, 'blob-gz');
    await assert.rejects(fs.access(blobFile), 'moved, not copied');
    const files = (await fs.readdir(store.layerDir(diffId))).sort();
    assert.deepEqual(files, ['complete', 'layer.tar.gz', 'root'], 'no uncompressed copy is kept');
    assert.deepEqual(await store.compressedBlob(diffId), { path: join(store.layerDir(diffId), 'layer.tar.gz'), digest: sha(gz), size: gz.length });
    assert.equal(await store.size(diffId), tar.length);
    const chunks: Buffer[] = [];
    for await (const c of store.tarStream(diffId)) chunks.push(c as Buffer);
    assert.equal(sha(Buffer.concat(chunks)), diffId);
    await store.exportTar(diffId, join(dir, 'exported.tar'));
    assert.equal(sha(await fs.readFile(join(dir, 'exported.tar'))), diffId);
    await store.remove(diffId);
  });

  it('content that is not the expected diff id is refused and leaves nothing', async () => {
    const other = Buffer.from(tar);
    other[other.indexOf('xxxx') + 10] ^= 1; // one byte of a file's content: still a tar that unpacks
    const s = await feed(store, gzipSync(other), diffId, 65536);
    await assert.rejects(s.finish(), /layer digest mismatch/);
    await s.abort();
    assert.equal(await store.has(diffId), false);
    assert.deepEqual(await fs.readdir(join(dir, 'layers')), []);
    assert.deepEqual(await staged(), []);
  });

  it('a truncated gzip blob fails, and a tar that dies mid-stream does not stall the writer', async () => {
    const gz = gzipSync(tar);
    const s = await feed(store, gz.subarray(0, gz.length >> 1), diffId, 1000);
    await assert.rejects(s.finish());
    await s.abort();
    assert.deepEqual(await staged(), []);
    // Not a tar at all: tar exits early, the remaining bytes are still taken (and hashed).
    const junk = Buffer.alloc(4 << 20, 0x41);
    const t = await feed(store, junk, sha(junk), 65536);
    await assert.rejects(t.finish(), /tar:/);
    await t.abort();
    assert.deepEqual(await staged(), []);
    assert.equal((await run('sh', ['-c', `ls ${join(dir, 'layers')} | wc -l`])).stdout.trim(), '0');
  });
});
