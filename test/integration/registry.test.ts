import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BERTH_CLI, TestHost } from './harness.js';
import { startRegistry, startTokenServer, type RegistryServer } from './registry-server.js';
import { run, runOk } from '../../src/util/exec.js';

/** Registries run on loopback inside the test host's namespace, where berthd can reach them. */
describe('pull and push with a local registry', () => {
  let host: TestHost;
  let open: RegistryServer;
  const stops: Array<() => Promise<void>> = [];
  let cliConfig: string;

  before(async () => {
    host = await TestHost.create();
    open = await startRegistry(host, 5000);
    stops.push(open.stop);
    cliConfig = join(host.dir, 'berth-config');
  });
  after(async () => {
    for (const s of stops) await s().catch(() => undefined);
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  /** berth's CLI with its own credentials file. */
  function berth(args: string[], input?: string) {
    return run(process.execPath, [BERTH_CLI, '-H', `unix://${host.socket}`, ...args], { env: { ...process.env, DOCKER_CONFIG: cliConfig }, ...(input !== undefined ? { input } : {}) });
  }
  async function ok(args: string[], input?: string): Promise<string> {
    const r = await berth(args, input);
    assert.equal(r.code, 0, `berth ${args.join(' ')}: ${r.stdout}${r.stderr}`);
    return r.stdout;
  }
  async function layerDirs(): Promise<string[]> {
    return (await fs.readdir(join(host.root, 'image', 'layers'))).sort();
  }
  /** Runs a Node snippet inside the namespace (the test process cannot reach the registry itself). */
  async function inNs(code: string): Promise<string> {
    const r = await host.inNetns(process.execPath, ['--input-type=module', '-e', code]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }
  /** The registry's stored gzip blob of a layer, found by its diff id's first 12 hex digits. */
  async function layerBlob(reg: RegistryServer, layerId: string): Promise<{ hex: string; data: string }> {
    const { gunzipSync } = await import('node:zlib');
    const { createHash } = await import('node:crypto');
    const blobsDir = join(reg.storage, 'docker', 'registry', 'v2', 'blobs', 'sha256');
    for (const pre of await fs.readdir(blobsDir)) {
      for (const h of await fs.readdir(join(blobsDir, pre))) {
        const data = join(blobsDir, pre, h, 'data');
        const bytes = await fs.readFile(data);
        if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) continue;
        let plain: Buffer;
        try { plain = gunzipSync(bytes); } catch { continue; } // the blob another test corrupted
        if (createHash('sha256').update(plain).digest('hex').startsWith(layerId)) return { hex: h, data };
      }
    }
    throw new Error(`no blob for layer ${layerId}`);
  }
  /**
   * Puts an image into the registry by hand (as another tool would push it), with its layers
   * gzipped at level 1: bytes berth's own push (Node's default level) would never produce.
   */
  async function pushRaw(repo: string, tag: string, tars: Buffer[]): Promise<{ layers: string[]; diffIds: string[] }> {
    const { gzipSync } = await import('node:zlib');
    const { createHash } = await import('node:crypto');
    const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
    const dir = join(host.dir, `raw-${repo}`);
    await fs.mkdir(dir, { recursive: true });
    const gz = tars.map((t) => gzipSync(t, { level: 1 }));
    const config = Buffer.from(JSON.stringify({
      architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/bin'] },
      rootfs: { type: 'layers', diff_ids: tars.map(sha) }, history: tars.map(() => ({ created_by: 'by hand' })),
    }));
    const blobs = [config, ...gz];
    for (const [i, b] of blobs.entries()) await fs.writeFile(join(dir, `blob${i}`), b);
    const manifest = {
      schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: sha(config) },
      layers: gz.map((b) => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: b.length, digest: sha(b) })),
    };
    await fs.writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
    await inNs(`
      const fs = await import('node:fs/promises');
      const base = 'http://${open.addr}/v2/${repo}';
      for (let i = 0; i < ${blobs.length}; i++) {
        const bytes = await fs.readFile('${dir}/blob' + i);
        const digest = 'sha256:' + (await import('node:crypto')).createHash('sha256').update(bytes).digest('hex');
        const start = await fetch(base + '/blobs/uploads/', { method: 'POST' });
        const url = new URL(start.headers.get('location'), base);
        url.searchParams.set('digest', digest);
        const put = await fetch(url, { method: 'PUT', body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
        if (put.status !== 201) throw new Error('blob ' + put.status + ' ' + await put.text());
      }
      const put = await fetch(base + '/manifests/${tag}', { method: 'PUT', headers: { 'Content-Type': 'application/vnd.docker.distribution.manifest.v2+json' }, body: await fs.readFile('${dir}/manifest.json') });
      if (put.status !== 201) throw new Error('manifest ' + put.status + ' ' + await put.text());
    `);
    return { layers: manifest.layers.map((l) => l.digest), diffIds: tars.map(sha) };
  }
  /** The layer digests of a manifest in the registry. */
  async function remoteLayers(repo: string, tag: string): Promise<string[]> {
    return JSON.parse(await inNs(`
      const r = await fetch('http://${open.addr}/v2/${repo}/manifests/${tag}', { headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
      process.stdout.write(JSON.stringify((await r.json()).layers.map((l) => l.digest)));
    `)) as string[];
  }
  /** A tiny one-file image, different from busybox, made with import. */
  async function smallImage(tag: string, content: string): Promise<string> {
    const dir = join(host.dir, `small-${content}`);
    await fs.mkdir(join(dir, 'etc'), { recursive: true });
    await fs.writeFile(join(dir, 'etc', 'marker'), `${content}\n`);
    const tar = `${dir}.tar`;
    await runOk('tar', ['-cf', tar, '-C', dir, '.']);
    return (await ok(['import', tar, tag])).trim();
  }

  it('push busybox, remove it, pull it back and run it (berth CLI)', async () => {
    const reg = open.addr;
    await ok(['tag', 'busybox', `${reg}/busybox:v1`]);
    const pushed = await ok(['push', `${reg}/busybox:v1`]);
    assert.match(pushed, new RegExp(`The push refers to repository \\[${reg}/busybox\\]`));
    assert.match(pushed, /[0-9a-f]{12}: Pushed/);
    const digest = /v1: digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(pushed)?.[1];
    assert.ok(digest, pushed);
    // the same layers a second time: found by HEAD, not uploaded again
    const again = await ok(['push', `${reg}/busybox:v1`]);
    assert.match(again, /[0-9a-f]{12}: Layer already exists/);
    assert.doesNotMatch(again, /Pushed/);
    assert.equal((await ok(['image', 'inspect', '-f', '{{json .RepoDigests}}', `${reg}/busybox:v1`])).trim(), JSON.stringify([`${reg}/busybox@${digest}`]));

    const id = (await ok(['image', 'inspect', '-f', '{{.Id}}', 'busybox'])).trim();
    await ok(['rmi', `${reg}/busybox:v1`]);
    await ok(['rmi', 'busybox']);
    assert.deepEqual(await layerDirs(), []);
    const pulled = await ok(['pull', `${reg}/busybox:v1`]);
    assert.match(pulled, /v1: Pulling from busybox/);
    assert.match(pulled, /[0-9a-f]{12}: Pulling fs layer/);
    assert.match(pulled, /[0-9a-f]{12}: Download complete/);
    assert.match(pulled, /[0-9a-f]{12}: Pull complete/);
    assert.match(pulled, new RegExp(`Digest: ${digest}`));
    assert.match(pulled, new RegExp(`Status: Downloaded newer image for ${reg}/busybox:v1\\n${reg}/busybox:v1\\n$`));
    assert.equal((await ok(['image', 'inspect', '-f', '{{.Id}}', `${reg}/busybox:v1`])).trim(), id, 'same config, same image id');
    assert.equal(await ok(['run', '--rm', `${reg}/busybox:v1`, 'echo', 'pulled and running']), 'pulled and running\n');

    // pulled again: nothing downloaded
    const twice = await ok(['pull', `${reg}/busybox:v1`]);
    assert.match(twice, /Already exists/);
    assert.match(twice, /Status: Image is up to date/);
    // by digest
    await ok(['tag', `${reg}/busybox:v1`, 'busybox:latest']);
    const byDigest = await ok(['pull', `${reg}/busybox@${digest}`]);
    assert.match(byDigest, new RegExp(`${reg}/busybox@${digest}\\n$`));
    // a pulled image goes through save and load unchanged
    const tarFile = join(host.dir, 'pulled.tar');
    await ok(['save', '-o', tarFile, `${reg}/busybox:v1`]);
    await ok(['rmi', `${reg}/busybox:v1`]);
    assert.match(await ok(['load', '-i', tarFile]), new RegExp(`Loaded image: ${reg}/busybox:v1`));
    assert.equal((await ok(['image', 'inspect', '-f', '{{.Id}}', `${reg}/busybox:v1`])).trim(), id);
  });

  it('a built image: push it, remove it, pull it back, run it', async () => {
    const reg = open.addr;
    const ctx = join(host.dir, 'buildctx');
    await fs.mkdir(ctx, { recursive: true });
    await fs.writeFile(join(ctx, 'Dockerfile'), 'FROM busybox\nRUN echo made-by-run > /built\nCMD ["cat", "/built"]\n');
    await ok(['build', '-t', `${reg}/built:1`, ctx]);
    assert.match(await ok(['push', `${reg}/built:1`]), /1: digest: sha256:/);
    const id = (await ok(['image', 'inspect', '-f', '{{.Id}}', `${reg}/built:1`])).trim();
    await ok(['rmi', `${reg}/built:1`]);
    await ok(['image', 'prune', '-f']);
    assert.equal((await berth(['image', 'inspect', id])).code, 1);
    await ok(['pull', `${reg}/built:1`]);
    assert.equal((await ok(['image', 'inspect', '-f', '{{.Id}}', `${reg}/built:1`])).trim(), id);
    assert.equal(await ok(['run', '--rm', `${reg}/built:1`]), 'made-by-run\n');
  });

  it('the docker CLI: push, pull with its progress stream, and run of an image not present pulls it', async () => {
    const reg = open.addr;
    const tagged = await host.docker(['tag', 'busybox', `${reg}/dockercli:1`]);
    assert.equal(tagged.code, 0, tagged.stderr);
    const push = await host.docker(['push', `${reg}/dockercli:1`]);
    assert.equal(push.code, 0, push.stderr);
    assert.match(push.stdout, /1: digest: sha256:[0-9a-f]{64} size: \d+/);
    assert.equal((await host.docker(['rmi', `${reg}/dockercli:1`])).code, 0);

    const pull = await host.docker(['pull', `${reg}/dockercli:1`]);
    assert.equal(pull.code, 0, pull.stderr);
    assert.match(pull.stdout, /Status: (Downloaded newer image|Image is up to date) for/);
    assert.match(pull.stdout, new RegExp(`${reg}/dockercli:1\\n$`));
    assert.equal((await host.docker(['rmi', `${reg}/dockercli:1`])).code, 0);

    const r = await host.docker(['run', '--rm', `${reg}/dockercli:1`, 'echo', 'auto-pulled']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`Unable to find image '${reg}/dockercli:1' locally`));
    assert.equal(r.stdout.split('\n').filter((l) => l === 'auto-pulled').length, 1, r.stdout);
  });

  it('an unknown tag or repository is a 404 with the registry\'s words', async () => {
    const res = await host.api('POST', `/images/create?fromImage=${encodeURIComponent(`${open.addr}/busybox`)}&tag=nope`);
    assert.equal(res.status, 404);
    assert.match(res.json.message, new RegExp(`manifest for ${open.addr}/busybox:nope not found: manifest unknown`));
    const cli = await berth(['pull', `${open.addr}/nothere:1`]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /Error response from daemon: manifest for 127\.0\.0\.1:5000\/nothere:1 not found/);
    const docker = await host.docker(['pull', `${open.addr}/busybox:nope`]);
    assert.notEqual(docker.code, 0);
    assert.match(docker.stderr, /manifest for 127\.0\.0\.1:5000\/busybox:nope not found: manifest unknown/);
    // pushing what is not here
    const nopush = await host.api('POST', `/images/${encodeURIComponent(`${open.addr}/ghost`)}/push?tag=1`, undefined, { 'X-Registry-Auth': 'e30=' });
    assert.equal(nopush.status, 404);
    assert.match(nopush.json.message, /An image does not exist locally with the tag: 127\.0\.0\.1:5000\/ghost/);
  });

  it('a corrupted blob in the registry is rejected and nothing is stored', async () => {
    const reg = open.addr;
    await smallImage(`${reg}/corrupt:1`, 'corrupt');
    const pushed = await ok(['push', `${reg}/corrupt:1`]);
    const layerId = /([0-9a-f]{12}): Pushed/.exec(pushed)![1]!;
    await ok(['rmi', `${reg}/corrupt:1`]);
    const layersBefore = await layerDirs();
    const imagesBefore = await ok(['images', '-q', '--no-trunc']);
    const blob = await layerBlob(open, layerId);
    const bytes = await fs.readFile(blob.data);
    bytes[Math.floor(bytes.length / 2)] ^= 0xff;
    await fs.writeFile(blob.data, bytes);
    const corrupted = blob.hex;
    assert.ok(corrupted, 'found the layer blob');
    const r = await berth(['pull', `${reg}/corrupt:1`]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, new RegExp(`filesystem layer verification failed for digest sha256:${corrupted}`));
    assert.deepEqual(await layerDirs(), layersBefore, 'no layer stored');
    assert.equal(await ok(['images', '-q', '--no-trunc']), imagesBefore, 'no image stored');
    assert.deepEqual(await fs.readdir(join(host.root, 'image', 'tmp')), [], 'no scratch file left');
    assert.deepEqual(await fs.readdir(join(host.root, 'image', 'downloads')), [], 'the bad download is not kept');
  });

  it('an interrupted download resumes with a Range request; a bad partial is thrown away', async () => {
    const reg = open.addr;
    const dir = join(host.dir, 'resume');
    await fs.mkdir(dir, { recursive: true });
    const { randomBytes } = await import('node:crypto');
    await fs.writeFile(join(dir, 'noise'), randomBytes(4 << 20));
    await runOk('tar', ['-cf', `${dir}.tar`, '-C', dir, '.']);
    await ok(['import', `${dir}.tar`, `${reg}/resume:1`]);
    const layerId = /([0-9a-f]{12}): Pushed/.exec(await ok(['push', `${reg}/resume:1`]))![1]!;
    await ok(['rmi', `${reg}/resume:1`]);
    const blob = await layerBlob(open, layerId);
    const full = await fs.readFile(blob.data);
    const half = Math.floor(full.length / 2);
    const partial = join(host.root, 'image', 'downloads', blob.hex);
    // As a pull killed halfway leaves it:
    await fs.writeFile(partial, full.subarray(0, half));
    const res = await host.api('POST', `/images/create?fromImage=${encodeURIComponent(`${reg}/resume`)}&tag=1`);
    assert.equal(res.status, 200);
    const msgs = res.body.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    assert.ok(!msgs.some((m) => m.error), res.body);
    const first = msgs.find((m) => m.id === blob.hex.slice(0, 12) && m.status === 'Downloading');
    assert.ok(first.progressDetail.current > half, `resumed at ${first.progressDetail.current}, partial had ${half}`);
    await assert.rejects(fs.access(partial), 'the partial is gone once the layer is in');
    await ok(['image', 'inspect', `${reg}/resume:1`]);

    // A partial with wrong bytes fails the digest check, and is deleted so a retry starts clean.
    await ok(['rmi', `${reg}/resume:1`]);
    const bad = Buffer.from(full.subarray(0, half));
    bad[10] ^= 0xff;
    await fs.writeFile(partial, bad);
    const failed = await berth(['pull', `${reg}/resume:1`]);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /filesystem layer verification failed/);
    await assert.rejects(fs.access(partial));
    await ok(['pull', `${reg}/resume:1`]);
  });

  it('a pulled layer is stored once, as the registry\'s blob: whiteouts unpacked, save gives the exact diff ids, push sends the same blob', async () => {
    const { createHash } = await import('node:crypto');
    const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
    const src = join(host.dir, 'raw-src');
    await fs.mkdir(join(src, 'l1', 'dir'), { recursive: true });
    await fs.mkdir(join(src, 'l2', 'dir'), { recursive: true });
    await fs.writeFile(join(src, 'l1', 'keep'), 'compressible text\n'.repeat(20_000));
    await fs.writeFile(join(src, 'l1', 'gone'), 'deleted by the next layer\n');
    await fs.writeFile(join(src, 'l1', 'dir', 'old'), 'hidden by an opaque dir\n');
    await fs.writeFile(join(src, 'l2', '.wh.gone'), '');
    await fs.writeFile(join(src, 'l2', 'dir', '.wh..wh..opq'), '');
    await fs.writeFile(join(src, 'l2', 'dir', 'new'), 'new\n');
    const tars: Buffer[] = [];
    for (const l of ['l1', 'l2']) {
      await runOk('tar', ['-cf', join(src, `${l}.tar`), '-C', join(src, l), '.']);
      tars.push(await fs.readFile(join(src, `${l}.tar`)));
    }
    const raw = await pushRaw('raw', '1', tars);
    await ok(['pull', `${open.addr}/raw:1`]);

    // Each layer directory holds the registry's blob (no uncompressed copy) and the tree.
    for (const [i, d] of raw.diffIds.entries()) {
      const ldir = join(host.root, 'image', 'layers', d.slice(7));
      assert.deepEqual((await fs.readdir(ldir)).sort(), ['complete', 'layer.tar.gz', 'root']);
      assert.equal(sha(await fs.readFile(join(ldir, 'layer.tar.gz'))), raw.layers[i]);
    }
    const l2 = join(host.root, 'image', 'layers', raw.diffIds[1]!.slice(7), 'root');
    const gone = await fs.stat(join(l2, 'gone'));
    assert.ok(gone.isCharacterDevice() && gone.rdev === 0, 'the whiteout is overlayfs\' 0:0 device');
    assert.equal(await runOk('getfattr', ['--only-values', '-n', 'trusted.overlay.opaque', join(l2, 'dir')]), 'y');
    assert.equal(Number(await ok(['image', 'inspect', '-f', '{{.Size}}', `${open.addr}/raw:1`])), tars[0]!.length + tars[1]!.length);
    assert.deepEqual(await fs.readdir(join(host.root, 'image', 'downloads')), [], 'downloads became layers');

    // save regenerates each layer.tar from the stored blob: exactly the tar of the diff id.
    const saved = join(host.dir, 'raw-saved');
    await fs.mkdir(saved);
    await ok(['save', '-o', join(saved, 'img.tar'), `${open.addr}/raw:1`]);
    await runOk('tar', ['-xf', join(saved, 'img.tar'), '-C', saved]);
    const [m] = JSON.parse(await fs.readFile(join(saved, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
    assert.deepEqual(await Promise.all(m!.Layers.map(async (p) => sha(await fs.readFile(join(saved, p))))), raw.diffIds);

    // push to another repository sends the stored blobs themselves, not a gzip of our own.
    await ok(['tag', `${open.addr}/raw:1`, `${open.addr}/rawcopy:1`]);
    await ok(['push', `${open.addr}/rawcopy:1`]);
    assert.deepEqual(await remoteLayers('rawcopy', '1'), raw.layers);
    await ok(['rmi', `${open.addr}/raw:1`, `${open.addr}/rawcopy:1`]);
    for (const d of raw.diffIds) await assert.rejects(fs.access(join(host.root, 'image', 'layers', d.slice(7))));
  });

  it('a pull killed with kill -9 mid-download: no half layer counts after the restart, and the next pull resumes', async () => {
    const dir = join(host.dir, 'killed');
    await fs.mkdir(dir, { recursive: true });
    const { randomBytes } = await import('node:crypto');
    await fs.writeFile(join(dir, 'noise'), randomBytes(8 << 20));
    await runOk('tar', ['-cf', `${dir}.tar`, '-C', dir, '.']);
    await ok(['import', `${dir}.tar`, `${open.addr}/killed:1`]);
    const layerId = /([0-9a-f]{12}): Pushed/.exec(await ok(['push', `${open.addr}/killed:1`]))![1]!;
    const diffId = (await ok(['image', 'inspect', '-f', '{{index .RootFS.Layers 0}}', `${open.addr}/killed:1`])).trim();
    await ok(['rmi', `${open.addr}/killed:1`]);
    const blob = await layerBlob(open, layerId);
    const size = (await fs.stat(blob.data)).size;
    const partial = join(host.root, 'image', 'downloads', blob.hex);
    // The registry's loopback slowed to ~2.5 MB/s, so the 8 MB download is caught halfway.
    await runOk('tc', ['-n', host.netns, 'qdisc', 'add', 'dev', 'lo', 'root', 'tbf', 'rate', '20mbit', 'burst', '256kb', 'latency', '1s']);
    try {
      // Not awaited: the answer is cut off by the kill.
      void host.api('POST', `/images/create?fromImage=${encodeURIComponent(`${open.addr}/killed`)}&tag=1`).catch(() => undefined);
      for (let i = 0; ; i++) {
        const have = await fs.stat(partial).then((st) => st.size, () => 0);
        if (have > 1 << 20) break;
        assert.ok(i < 1000, 'the download started');
        await new Promise((r) => setTimeout(r, 10));
      }
      const staged = await fs.readdir(join(host.root, 'image', 'tmp'));
      assert.ok(staged.some((f) => f.startsWith('unpack-')), `unpacking while downloading: ${staged}`);
      await host.stopDaemon('SIGKILL');
    } finally {
      await run('tc', ['-n', host.netns, 'qdisc', 'del', 'dev', 'lo', 'root']);
    }
    const cut = (await fs.stat(partial)).size;
    assert.ok(cut > 0 && cut < size, `a partial download (${cut} of ${size})`);
    await host.startDaemon();
    assert.deepEqual(await fs.readdir(join(host.root, 'image', 'tmp')), [], 'the half-unpacked tree is gone');
    await assert.rejects(fs.access(join(host.root, 'image', 'layers', diffId.slice(7))), 'no layer from the killed pull');
    const res = await host.api('POST', `/images/create?fromImage=${encodeURIComponent(`${open.addr}/killed`)}&tag=1`);
    const msgs = res.body.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    assert.ok(!msgs.some((mm) => mm.error), res.body);
    const first = msgs.find((mm) => mm.id === blob.hex.slice(0, 12) && mm.status === 'Downloading');
    assert.ok(first.progressDetail.current >= cut, `resumed at ${first.progressDetail.current}, the partial had ${cut}`);
    assert.equal((await ok(['image', 'inspect', '-f', '{{index .RootFS.Layers 0}}', `${open.addr}/killed:1`])).trim(), diffId);
    assert.equal(`sha256:${(await import('node:crypto')).createHash('sha256').update(await fs.readFile(join(host.root, 'image', 'layers', diffId.slice(7), 'layer.tar.gz'))).digest('hex')}`, `sha256:${blob.hex}`);
    await ok(['rmi', `${open.addr}/killed:1`]);
  });

  it('an OCI index: the host platform by default, --platform picks another, an absent one is refused', async () => {
    const reg = open.addr;
    await smallImage(`${reg}/multi:arm`, 'arm');
    await ok(['tag', 'busybox', `${reg}/multi:amd`]);
    await ok(['push', `${reg}/multi:arm`]);
    await ok(['push', `${reg}/multi:amd`]);
    const armId = (await ok(['image', 'inspect', '-f', '{{.Id}}', `${reg}/multi:arm`])).trim();
    const amdId = (await ok(['image', 'inspect', '-f', '{{.Id}}', `${reg}/multi:amd`])).trim();
    // Assemble the index from the two pushed manifests, as a multi-arch build would push it.
    await inNs(`
      const base = 'http://${reg}/v2/multi';
      const accept = { Accept: 'application/vnd.docker.distribution.manifest.v2+json' };
      const desc = async (tag, architecture) => {
        const r = await fetch(base + '/manifests/' + tag, { headers: accept });
        const b = Buffer.from(await r.arrayBuffer());
        return { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', size: b.length, digest: r.headers.get('docker-content-digest'), platform: { os: 'linux', architecture } };
      };
      const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [await desc('arm', 'arm64'), await desc('amd', 'amd64')] };
      const put = await fetch(base + '/manifests/all', { method: 'PUT', headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' }, body: JSON.stringify(index) });
      if (put.status !== 201) throw new Error(put.status + ' ' + await put.text());
    `);
    await ok(['pull', `${reg}/multi:all`]);
    assert.equal((await ok(['image', 'inspect', '-f', '{{.Id}}', `${reg}/multi:all`])).trim(), amdId);
    await ok(['pull', '--platform', 'linux/arm64', `${reg}/multi:all`]);
    assert.equal((await ok(['image', 'inspect', '-f', '{{.Id}}', `${reg}/multi:all`])).trim(), armId);
    const none = await berth(['pull', '--platform', 'linux/s390x', `${reg}/multi:all`]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no matching manifest for linux\/s390x in the manifest list entries/);
  });

  it('basic auth (htpasswd): refused without login, login/logout through berth and the docker CLI', async () => {
    const basic = await startRegistry(host, 5001, { htpasswd: { user: 'alice', password: 's3cret' } });
    stops.push(basic.stop);
    const reg = basic.addr;
    await ok(['tag', 'busybox', `${reg}/private:1`]);
    const refused = await berth(['push', `${reg}/private:1`]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /unauthorized/);
    const bad = await berth(['login', '-u', 'alice', '-p', 'wrong', reg]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /login attempt to http:\/\/127\.0\.0\.1:5001\/v2\/ failed with status: 401/);
    assert.match(await ok(['login', '-u', 'alice', '--password-stdin', reg], 's3cret\n'), /Login Succeeded/);
    const cfg = JSON.parse(await fs.readFile(join(cliConfig, 'config.json'), 'utf8'));
    assert.equal(cfg.auths[reg].auth, Buffer.from('alice:s3cret').toString('base64'));
    assert.match(await ok(['push', `${reg}/private:1`]), /1: digest: sha256:/);
    await ok(['rmi', `${reg}/private:1`]);
    assert.match(await ok(['pull', `${reg}/private:1`]), /Status: Downloaded newer image/);
    assert.equal(await ok(['logout', reg]), `Removing login credentials for ${reg}\n`);
    await ok(['rmi', `${reg}/private:1`]);
    const noCreds = await berth(['pull', `${reg}/private:1`]);
    assert.equal(noCreds.code, 1);
    assert.match(noCreds.stderr, /unauthorized|no basic auth credentials/);

    // the docker CLI: POST /auth, then X-Registry-Auth on pull
    const login = await host.docker(['login', '-u', 'alice', '--password-stdin', reg], 's3cret\n');
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stdout, /Login Succeeded/);
    const pull = await host.docker(['pull', `${reg}/private:1`]);
    assert.equal(pull.code, 0, pull.stderr);
    assert.equal((await host.docker(['logout', reg])).code, 0);
  });

  it('a non-loopback registry is reached over plain HTTP only when --insecure-registry names it; berthd survives kill -9', async () => {
    // An address of the test host's own, so nothing leaves the namespace.
    await runOk('ip', ['-n', host.netns, 'addr', 'add', '10.99.0.1/32', 'dev', 'lo']);
    const plain = await startRegistry(host, 5004, undefined, '10.99.0.1');
    stops.push(plain.stop);
    await ok(['tag', 'busybox', '10.99.0.1:5004/plain:1']);
    const refused = await berth(['push', '10.99.0.1:5004/plain:1']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /Get "https:\/\/10\.99\.0\.1:5004\/v2\/"/);
    await host.stopDaemon('SIGKILL');
    await host.startDaemon(['--insecure-registry', '10.99.0.0/24']);
    assert.match(await ok(['push', '10.99.0.1:5004/plain:1']), /1: digest: sha256:/);
    await ok(['rmi', '10.99.0.1:5004/plain:1']);
    await ok(['pull', '10.99.0.1:5004/plain:1']);
    assert.equal(await ok(['run', '--rm', '10.99.0.1:5004/plain:1', 'echo', 'plain']), 'plain\n');
  });

  it('token auth: the WWW-Authenticate bearer flow through a token server', async () => {
    const token = await startTokenServer(host, 5003, 'bob', 'tok3n');
    stops.push(token.stop);
    const reg = await startRegistry(host, 5002, { token: { realm: token.realm, cert: token.cert } });
    stops.push(reg.stop);
    await ok(['tag', 'busybox', `${reg.addr}/team/app:2`]);
    const refused = await berth(['push', `${reg.addr}/team/app:2`]);
    assert.equal(refused.code, 1, refused.stdout);
    await ok(['login', '-u', 'bob', '-p', 'tok3n', reg.addr]);
    assert.match(await ok(['push', `${reg.addr}/team/app:2`]), /2: digest: sha256:/);
    await ok(['rmi', `${reg.addr}/team/app:2`]);
    await ok(['pull', `${reg.addr}/team/app:2`]);
    assert.match(token.log(), /token issued \?.*scope=repository%3Ateam%2Fapp%3Apull%2Cpush/);
    assert.match(token.log(), /token issued \?.*scope=repository%3Ateam%2Fapp%3Apull(&|$)/m);
    await ok(['logout', reg.addr]);
  });
});
