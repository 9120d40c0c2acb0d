import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runOk } from '../../src/util/exec.js';
import { TestHost } from './harness.js';

/**
 * `docker load` of archives whose entries are symlinks (issue 22, item 6): a link inside the
 * archive is legal (Docker's own `docker save` links duplicate layer directories), a link to a
 * host file is never read, and the refusal shows nothing of the file it points at. "Host files"
 * are /etc/passwd (only its digest and first bytes are compared against the answer) and files the
 * test writes outside the archive.
 */
describe('load: symlinks in the archive', () => {
  let host: TestHost;
  let dir = '';
  let base = '';
  let manifest: Array<{ Config: string; RepoTags: string[] | null; Layers: string[] }>;
  let passwdDigest = '';

  before(async () => {
    host = await TestHost.create();
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-load-'));
    const saved = await host.api('GET', '/images/get?names=busybox');
    assert.equal(saved.status, 200, saved.body);
    base = join(dir, 'base');
    await fs.mkdir(base);
    await fs.writeFile(join(dir, 'base.tar'), saved.raw);
    await runOk('tar', ['-xf', join(dir, 'base.tar'), '-C', base]);
    manifest = JSON.parse(await fs.readFile(join(base, 'manifest.json'), 'utf8'));
    assert.equal(manifest[0]!.Layers.length, 1, 'the seeded busybox has one layer');
    passwdDigest = createHash('sha256').update(await fs.readFile('/etc/passwd')).digest('hex');
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  /** A copy of the saved busybox archive to craft, under a name of its own. */
  async function variant(name: string): Promise<string> {
    const d = join(dir, name);
    await runOk('cp', ['-a', base, d]);
    return d;
  }

  async function load(d: string): Promise<string> {
    const tar = `${d}.tar`;
    await runOk('tar', ['-cf', tar, '-C', d, '.']);
    const r = await host.api('POST', '/images/load', await fs.readFile(tar), { 'Content-Type': 'application/x-tar' });
    assert.equal(r.status, 200, r.body);
    return r.body;
  }

  /** The refusal: names the entry, shows nothing of the host file, stores no image. */
  function refused(body: string, entry: RegExp): void {
    assert.match(body, /"error"/, body);
    assert.match(body, entry, body);
    assert.doesNotMatch(body, /root:/, 'the error must not echo the host file');
    assert.ok(!body.includes(passwdDigest), 'the error must not give the host file\'s digest');
    assert.doesNotMatch(body, /Loaded image/);
  }

  async function tagged(tag: string): Promise<number> {
    return (await host.api('GET', `/images/${tag}/json`)).status;
  }

  async function writeManifest(d: string, tag: string, patch: Partial<{ Config: string; Layers: string[] }> = {}): Promise<void> {
    await fs.writeFile(join(d, 'manifest.json'), JSON.stringify([{ ...manifest[0], RepoTags: [tag], ...patch }]));
  }

  it('a symlink to another entry inside the archive is followed (as docker save writes duplicate layers)', async () => {
    const d = await variant('inside');
    const layer = manifest[0]!.Layers[0]!;
    await fs.mkdir(join(d, 'shared'));
    await fs.rename(join(d, layer), join(d, 'shared', 'layer.tar'));
    await fs.symlink('../shared/layer.tar', join(d, layer));
    await fs.mkdir(join(d, 'configs'));
    await fs.rename(join(d, manifest[0]!.Config), join(d, 'configs', 'c.json'));
    await fs.symlink('configs/c.json', join(d, manifest[0]!.Config));
    await writeManifest(d, 'inside:v1');
    const body = await load(d);
    assert.match(body, /Loaded image: inside:v1/, body);
    assert.equal(await tagged('inside:v1'), 200);
  });

  it('a config that links to a host file is not read', async () => {
    const d = await variant('cfg-passwd');
    await fs.symlink('/etc/passwd', join(d, 'cfg.json'));
    await writeManifest(d, 'cfgpw:v1', { Config: 'cfg.json' });
    refused(await load(d), /cfg\.json is a link to outside the archive/);

    // A host file that is a perfectly good config: before the fix the image took its Env.
    const hostCfg = join(dir, 'host-config.json');
    const cfg = JSON.parse(await fs.readFile(join(base, manifest[0]!.Config), 'utf8'));
    cfg.config = { ...(cfg.config ?? {}), Env: ['LEAKED=from-a-host-file'] };
    await fs.writeFile(hostCfg, JSON.stringify(cfg));
    const e = await variant('cfg-host');
    await fs.symlink(hostCfg, join(e, 'cfg.json'));
    await writeManifest(e, 'cfghost:v1', { Config: 'cfg.json' });
    refused(await load(e), /cfg\.json is a link to outside the archive/);
    assert.equal(await tagged('cfghost:v1'), 404);
  });

  it('a layer that links to a host file is not read (nor its digest told)', async () => {
    const layer = manifest[0]!.Layers[0]!;
    const d = await variant('layer-passwd');
    await fs.rm(join(d, layer));
    await fs.symlink('/etc/passwd', join(d, layer));
    await writeManifest(d, 'layerpw:v1');
    refused(await load(d), /layer\.tar is a link to outside the archive/);

    // The right layer, but outside the archive: loading it would mean reading host files.
    const hostLayer = join(dir, 'host-layer.tar');
    await fs.copyFile(join(base, layer), hostLayer);
    const e = await variant('layer-host');
    await fs.rm(join(e, layer));
    await fs.symlink(hostLayer, join(e, layer));
    await writeManifest(e, 'layerhost:v1');
    refused(await load(e), /layer\.tar is a link to outside the archive/);
    assert.equal(await tagged('layerhost:v1'), 404);

    // Escaping by a relative path is the same.
    const f = await variant('layer-dotdot');
    await fs.rm(join(f, layer));
    await fs.symlink(`../../../../../../../../..${hostLayer}`, join(f, layer));
    await writeManifest(f, 'layerdots:v1');
    refused(await load(f), /layer\.tar is a link to outside the archive/);
    assert.equal(await tagged('layerdots:v1'), 404);
  });

  it('a manifest.json that links to a host file is not read', async () => {
    const d = await variant('manifest-passwd');
    await fs.rm(join(d, 'manifest.json'));
    await fs.symlink('/etc/passwd', join(d, 'manifest.json'));
    refused(await load(d), /manifest\.json is a link to outside the archive/);
  });

  it('an OCI layout whose blobs or index link to host files is not read', async () => {
    // An OCI layout of the same image: config, layer and manifest blobs, and index.json.
    const blobs = new Map<string, Buffer>();
    const put = (b: Buffer) => { const h = createHash('sha256').update(b).digest('hex'); blobs.set(h, b); return h; };
    const configHash = put(await fs.readFile(join(base, manifest[0]!.Config)));
    const layerBytes = await fs.readFile(join(base, manifest[0]!.Layers[0]!));
    const layerHash = put(layerBytes);
    const man = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configHash}`, size: blobs.get(configHash)!.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerHash}`, size: layerBytes.length }],
    }));
    const manHash = put(man);
    async function layout(name: string, tag: string, linked?: string): Promise<string> {
      const d = join(dir, name);
      await fs.mkdir(join(d, 'blobs', 'sha256'), { recursive: true });
      for (const [h, b] of blobs) {
        if (h === linked) {
          // The blob's exact bytes, but in a host file: its digest would check out.
          const hostFile = join(dir, `${name}-host-blob`);
          await fs.writeFile(hostFile, b);
          await fs.symlink(hostFile, join(d, 'blobs', 'sha256', h));
        } else {
          await fs.writeFile(join(d, 'blobs', 'sha256', h), b);
        }
      }
      await fs.writeFile(join(d, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
      await fs.writeFile(join(d, 'index.json'), JSON.stringify({
        schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${manHash}`, size: man.length, annotations: { 'io.containerd.image.name': `docker.io/library/${tag}` } }],
      }));
      return d;
    }
    const good = await layout('oci-good', 'ocigood:v1');
    assert.match(await load(good), /Loaded image: ocigood:v1/, 'the crafted layout itself loads');
    for (const [name, h] of [['oci-config', configHash], ['oci-layer', layerHash], ['oci-manifest', manHash]] as const) {
      const d = await layout(name, `${name}:v1`, h);
      refused(await load(d), new RegExp(`blobs/sha256/${h} is a link to outside the archive`));
      assert.equal(await tagged(`${name}:v1`), 404);
    }
    const idx = await layout('oci-index', 'ociindex:v1');
    await fs.rm(join(idx, 'index.json'));
    await fs.symlink('/etc/passwd', join(idx, 'index.json'));
    refused(await load(idx), /index\.json is a link to outside the archive/);
  });
  it('an OCI layout: zstd and xz layers, a manifest list (this host\'s entry), and refusals of wrong digests', async () => {
    const configBytes = await fs.readFile(join(base, manifest[0]!.Config));
    const tarPath = join(base, manifest[0]!.Layers[0]!);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    for (const tool of ['zstd', 'xz']) await runOk(tool, ['-k', '-q', '-f', tarPath]);
    const zst = await fs.readFile(`${tarPath}.zst`);
    const xz = await fs.readFile(`${tarPath}.xz`);
    const arch = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch;
    /** Writes a layout; `index` may name a manifest list; `corrupt` replaces a blob's bytes under its old name. */
    async function layout(name: string, tag: string, layer: { bytes: Buffer; mediaType: string }, opts: { list?: boolean; corrupt?: 'config' | 'layer' | 'manifest'; config?: Buffer } = {}): Promise<string> {
      const d = join(dir, name);
      await fs.mkdir(join(d, 'blobs', 'sha256'), { recursive: true });
      const put = async (b: Buffer, bad = false) => { const h = sha(b); await fs.writeFile(join(d, 'blobs', 'sha256', h), bad ? Buffer.concat([b, Buffer.from(' ')]) : b); return h; };
      const cfg = opts.config ?? configBytes;
      const c = await put(cfg, opts.corrupt === 'config');
      const l = await put(layer.bytes, opts.corrupt === 'layer');
      const man = Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${c}`, size: cfg.length },
        layers: [{ mediaType: layer.mediaType, digest: `sha256:${l}`, size: layer.bytes.length }],
      }));
      let top = await put(man, opts.corrupt === 'manifest');
      let topMedia = 'application/vnd.oci.image.manifest.v1+json';
      let topLen = man.length;
      if (opts.list) {
        // Another platform first, with a manifest blob that is not even there: only this host's entry is read.
        const list = Buffer.from(JSON.stringify({
          schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
          manifests: [
            { mediaType: topMedia, digest: `sha256:${'0'.repeat(64)}`, size: 1, platform: { os: 'linux', architecture: arch === 'amd64' ? 's390x' : 'amd64' } },
            { mediaType: topMedia, digest: `sha256:${top}`, size: man.length, platform: { os: 'linux', architecture: arch } },
          ],
        }));
        top = await put(list);
        topMedia = 'application/vnd.oci.image.index.v1+json';
        topLen = list.length;
      }
      await fs.writeFile(join(d, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
      await fs.writeFile(join(d, 'index.json'), JSON.stringify({
        schemaVersion: 2, manifests: [{ mediaType: topMedia, digest: `sha256:${top}`, size: topLen, annotations: { 'io.containerd.image.name': `docker.io/library/${tag}` } }],
      }));
      return d;
    }
    const runs = async (tag: string) => {
      const c = await host.api('POST', '/containers/create', { Image: tag, Cmd: ['sh', '-c', 'echo ran'] });
      assert.equal(c.status, 201, c.body);
      await host.api('POST', `/containers/${c.json.Id}/start`);
      assert.equal((await host.api('POST', `/containers/${c.json.Id}/wait`)).json.StatusCode, 0);
      await host.api('DELETE', `/containers/${c.json.Id}`);
    };
    const zstdTag = 'ocizstd:v1';
    assert.match(await load(await layout('oci-zstd', zstdTag, { bytes: zst, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' })), /Loaded image: ocizstd:v1/);
    await runs(zstdTag);
    // xz has no OCI media type; Docker's archive reader recognises it by its magic bytes.
    assert.match(await load(await layout('oci-xz', 'ocixz:v1', { bytes: xz, mediaType: 'application/vnd.oci.image.layer.v1.tar' })), /Loaded image: ocixz:v1/);
    await runs('ocixz:v1');
    assert.match(await load(await layout('oci-list', 'ocilist:v1', { bytes: zst, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }, { list: true })), /Loaded image: ocilist:v1/);
    await runs('ocilist:v1');
    // Bytes that are not what their digest names: refused, nothing stored.
    for (const corrupt of ['config', 'layer', 'manifest'] as const) {
      const body = await load(await layout(`oci-bad-${corrupt}`, `ocibad${corrupt}:v1`, { bytes: zst, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }, { corrupt }));
      assert.match(body, /"error".*digest mismatch/, `${corrupt}: ${body}`);
      assert.equal(await tagged(`ocibad${corrupt}:v1`), 404);
    }
    // A layer whose content is not the config's diff id.
    const cfg = JSON.parse(configBytes.toString());
    cfg.rootfs.diff_ids = [`sha256:${'1'.repeat(64)}`];
    const wrongDiff = await load(await layout('oci-bad-diffid', 'ocibaddiff:v1', { bytes: zst, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }, { config: Buffer.from(JSON.stringify(cfg)) }));
    assert.match(wrongDiff, /"error"/, wrongDiff);
    assert.equal(await tagged('ocibaddiff:v1'), 404);
    for (const t of [zstdTag, 'ocixz:v1', 'ocilist:v1']) await host.api('DELETE', `/images/${t}`);
  });

  it('import --change (POST /images/create?fromSrc=-&changes=…) sets the config Docker\'s way; a bad instruction is a 400', async () => {
    const tarPath = join(base, manifest[0]!.Layers[0]!);
    const q = (changes: string[]) => `/images/create?fromSrc=-&repo=imported&tag=v1&${changes.map((c) => `changes=${encodeURIComponent(c)}`).join('&')}`;
    const r = await host.api('POST', q(['CMD ["cat", "/etc/motd"]', 'ENV A=1 B=two', 'WORKDIR /srv', 'EXPOSE 8080/udp', 'LABEL who=me', 'USER nobody', 'ENTRYPOINT ["/bin/sh", "-c"]']), await fs.readFile(tarPath), { 'Content-Type': 'application/x-tar' });
    assert.equal(r.status, 200, r.body);
    const cfg = (await host.api('GET', '/images/imported:v1/json')).json.Config;
    assert.deepEqual(cfg.Cmd, ['cat', '/etc/motd']);
    assert.deepEqual(cfg.Entrypoint, ['/bin/sh', '-c']);
    assert.ok(cfg.Env.includes('A=1') && cfg.Env.includes('B=two'), JSON.stringify(cfg.Env));
    assert.equal(cfg.WorkingDir, '/srv');
    assert.deepEqual(cfg.ExposedPorts, { '8080/udp': {} });
    assert.deepEqual(cfg.Labels, { who: 'me' });
    assert.equal(cfg.User, 'nobody');
    const bad = await host.api('POST', q(['RUN echo no']), await fs.readFile(tarPath), { 'Content-Type': 'application/x-tar' });
    assert.equal(bad.status, 400, bad.body);
    assert.equal(bad.json.message, 'run is not a valid change command');
    await host.api('DELETE', '/images/imported:v1');
  });
});
