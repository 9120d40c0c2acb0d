/**
 * Image pull: each engine pulls the same image from its own local registry (Debian's
 * docker-registry on 127.0.0.1:5000 inside the engine's namespace). Docker pushes busybox once;
 * the others' registries get a copy of the same storage, so every engine fetches identical blobs.
 * Before every pull all images are removed, so each pull fetches the layers again.
 */
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { BenchContext } from '../context.js';
import type { Engine } from '../engines.js';
import { log, now, run, sleep } from '../util.js';

const REGISTRY = '/usr/bin/docker-registry';
const REF = '127.0.0.1:5000/bench/busybox';
/** Issue 9's image: about 50 MB of incompressible data in several layers (busybox plus three of 17 MB). */
const REF_BIG = '127.0.0.1:5000/bench/big';
const BIG_DOCKERFILE = ['FROM busybox', ...['a', 'b', 'c'].map((f) => `RUN head -c 17000000 /dev/urandom > /${f}`), ''].join('\n');

async function startRegistry(e: Engine): Promise<string> {
  const dir = join(e.dir, 'registry');
  const storage = join(dir, 'storage');
  await fs.mkdir(storage, { recursive: true });
  const config = join(dir, 'config.yml');
  await fs.writeFile(config, [
    'version: 0.1', 'log:', '  level: error', '  accesslog:', '    disabled: true',
    'storage:', '  filesystem:', `    rootdirectory: ${storage}`, '  delete:', '    enabled: true',
    'http:', '  addr: 127.0.0.1:5000', '  secret: berth-bench', '',
  ].join('\n'));
  e.spawnHelper(e.netnsPath, REGISTRY, ['serve', config]);
  for (let i = 0; i < 100; i++) {
    const r = await e.inHost('ss', ['-Hltn', 'sport = :5000']);
    if (r.stdout.trim()) return storage;
    await sleep(100);
  }
  throw new Error(`${e.name}: registry did not start`);
}

async function removeImages(e: Engine): Promise<void> {
  const imgs = await e.apiOk('GET', '/images/json?all=1');
  for (const i of imgs as Array<{ Id: string }>) await e.api('DELETE', `/images/${i.Id}?force=1`);
}

async function pullOnce(e: Engine, ref = REF): Promise<number> {
  const t0 = now();
  const r = await e.api('POST', `/images/create?fromImage=${encodeURIComponent(ref)}&tag=latest`);
  const ms = now() - t0;
  if (r.status !== 200) throw new Error(`${e.name}: pull: ${r.status} ${r.body.slice(0, 300)}`);
  const err = r.body.split('\n').map((l) => { try { return JSON.parse(l); } catch { return {}; } }).find((j: any) => j.error || j.errorDetail);
  if (err) throw new Error(`${e.name}: pull: ${JSON.stringify(err).slice(0, 300)}`);
  const i = await e.api('GET', `/images/${encodeURIComponent(ref)}:latest/json`);
  if (i.status !== 200) throw new Error(`${e.name}: pulled image not there (${i.status})`);
  return ms;
}

export async function pull(ctx: BenchContext): Promise<void> {
  const R = ctx.results;
  R.define({ key: 'pull', group: 'Image pull (from a local registry in the engine\'s namespace)', label: '`pull 127.0.0.1:5000/bench/busybox` (no layers present)', unit: 'ms', better: 'lower' });
  R.define({ key: 'pull_big', group: 'Image pull (from a local registry in the engine\'s namespace)', label: '`pull` of a 51 MB image in 4 layers (no layers present)', unit: 'ms', better: 'lower', target: '≤ 1.0x Docker' });
  const docker = ctx.engines.find((e) => e.name === 'docker');
  if (!existsSync(REGISTRY) || !docker) {
    R.note('pull', `n/a: needs ${REGISTRY} (Debian's docker-registry, installed by scripts/setup.sh) and the docker engine to push the image`);
    return;
  }
  const storage = new Map<string, string>();
  for (const e of ctx.engines) storage.set(e.name, await startRegistry(e));
  const tag = await docker.cli(['tag', 'busybox:latest', `${REF}:latest`]);
  if (tag.code !== 0) throw new Error(`docker tag: ${tag.stderr}`);
  const push = await docker.cli(['push', `${REF}:latest`]);
  if (push.code !== 0) throw new Error(`docker push: ${push.stderr}`);
  // Docker's classic builder makes the big image (its RUN steps run in Docker's own namespace).
  const ctxDir = join(docker.dir, 'bigctx');
  await fs.mkdir(ctxDir, { recursive: true });
  await fs.writeFile(join(ctxDir, 'Dockerfile'), BIG_DOCKERFILE);
  process.env.DOCKER_BUILDKIT = '0';
  const build = await docker.cli(['build', '-q', '-t', `${REF_BIG}:latest`, ctxDir]);
  if (build.code !== 0) throw new Error(`docker build: ${build.stderr}`);
  const pushBig = await docker.cli(['push', `${REF_BIG}:latest`]);
  if (pushBig.code !== 0) throw new Error(`docker push: ${pushBig.stderr}`);
  for (const e of ctx.engines) {
    if (e === docker) continue;
    await run('cp', ['-a', `${storage.get('docker')}/.`, storage.get(e.name)!]);
  }
  const size = await run('du', ['-sk', storage.get('docker')!]);
  R.note('pull', `busybox and the big image pushed once by Docker (registry storage ${size.stdout.split('\t')[0]} KiB), the same blobs served to every engine over plain HTTP on loopback; all images removed before each pull`);
  const reps = ctx.quick ? 3 : 10;
  const failed = new Set<string>();
  for (let rep = 0; rep < reps; rep++) {
    for (const e of ctx.order(rep)) {
      if (failed.has(e.name)) continue;
      try {
        await e.removeAll();
        await removeImages(e);
        R.add('pull', e.name, await pullOnce(e));
        await removeImages(e);
        R.add('pull_big', e.name, await pullOnce(e, REF_BIG));
      } catch (err) {
        failed.add(e.name);
        R.note('pull', String(err instanceof Error ? err.message : err).slice(0, 300));
        log(String(err));
      }
    }
  }
  for (const e of ctx.engines) await e.killHelpers();
}
