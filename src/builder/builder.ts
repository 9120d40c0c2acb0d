/**
 * The classic builder (what `docker build` does with DOCKER_BUILDKIT=0): each instruction makes an
 * image from the previous one; RUN runs in a container on the default bridge and its overlay upper
 * dir becomes the layer; COPY packs files from the context (or another stage) into a layer. A step
 * whose key (parent image, instruction, inputs) was built before reuses that image.
 */
import { createHash } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { join, normalize, posix } from 'node:path';
import type { Engine } from '../engine/engine.js';
import { readLogs } from '../engine/logs.js';
import { mountOverlay, unmount } from '../kernel/mount.js';
import { goArch } from '../images/store.js';
import type { ImageConfigFile, ImageRecord, ImageRuntimeConfig, ImageStore } from '../images/types.js';
import { ApiError, BadRequestError, NotFoundError } from '../util/errors.js';
import { run, runOk } from '../util/exec.js';
import { DockerfileError, expand, parseDockerfile, parseDuration, parsePairs, splitWords, type Instruction } from './dockerfile.js';
import { writeLayer, type TreeSpec } from './layer.js';

export interface BuildOptions {
  dockerfile: string;
  tags: string[];
  buildArgs: Record<string, string>;
  noCache: boolean;
  target?: string;
  labels: Record<string, string>;
}

export interface BuildDeps {
  engine: Engine;
  images: ImageStore;
  root: string;
  /** Pulls a FROM image that is not in the store. */
  pull?: (ref: string) => Promise<ImageRecord>;
}

/** A failed RUN: Docker reports the command's exit status as the error code. */
export class BuildError extends ApiError {
  constructor(message: string, readonly code: number) { super(500, message); }
}

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

interface Stage {
  name?: string;
  config: ImageConfigFile;
  /** The image the last step made (undefined for a scratch stage before its first step). */
  imageId?: string;
  /** ARG values in scope in this stage. */
  args: Record<string, string>;
}

function clone<T>(v: T): T { return JSON.parse(JSON.stringify(v)) as T; }

function envMap(cfg: ImageRuntimeConfig | undefined): Record<string, string> {
  const m: Record<string, string> = {};
  for (const e of cfg?.Env ?? []) { const i = e.indexOf('='); if (i > 0) m[e.slice(0, i)] = e.slice(i + 1); }
  return m;
}

function setEnv(cfg: ImageRuntimeConfig, k: string, v: string): void {
  const env = (cfg.Env ?? []).filter((e) => !e.startsWith(`${k}=`));
  env.push(`${k}=${v}`);
  cfg.Env = env;
}

/**
 * A path under root with every symlink on the way resolved *inside* root (an absolute target
 * starts again at root), so a context's or an image's `/var/run -> /run` can never lead to the
 * host's files. The last component is not followed: COPY takes a symlink as a symlink.
 */
export async function scopedPath(root: string, rel: string, followLast = false): Promise<string> {
  const parts = normalize(`/${rel}`).split('/').filter(Boolean);
  const done: string[] = [];
  let hops = 0;
  while (parts.length > (followLast ? 0 : 1)) {
    const part = parts.shift()!;
    if (part === '..') { done.pop(); continue; }
    const here = join(root, ...done, part);
    const st = await fs.lstat(here).catch(() => undefined);
    if (st?.isSymbolicLink()) {
      if (++hops > 40) throw new BadRequestError(`too many levels of symbolic links: ${rel}`);
      const target = await fs.readlink(here);
      if (target.startsWith('/')) done.length = 0;
      parts.unshift(...target.split('/').filter((x) => x && x !== '.'));
      continue;
    }
    done.push(part);
  }
  if (parts[0] === '..') done.pop();
  else if (parts[0]) done.push(parts[0]);
  return join(root, ...done.filter((x) => x !== '..'));
}

function globRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') { re += '.*'; i++; if (pattern[i + 1] === '/') i++; }
    else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}(/.*)?$`);
}

/** .dockerignore: patterns (with `!` exceptions) matched against context-relative paths. */
export function dockerignore(text: string): (rel: string) => boolean {
  const rules = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).map((l) => {
    const neg = l.startsWith('!');
    const p = posix.normalize((neg ? l.slice(1) : l).trim()).replace(/^\/+/, '').replace(/\/+$/, '');
    return { neg, re: globRegex(p) };
  });
  return (rel) => {
    let ignored = false;
    for (const r of rules) if (r.re.test(rel)) ignored = !r.neg;
    return ignored;
  };
}

/**
 * The largest Dockerfile or .dockerignore read. Both are parsed whole, as strings: a 100 MB
 * Dockerfile of blank lines took berthd to 1.4 GB. The rest of a context streams from disk at any size.
 */
export const BUILD_FILE_LIMIT = 4 * 1024 * 1024;

async function readBounded(path: string, name: string): Promise<string> {
  // A fifo in the context would block the open, and with it one of libuv's four threads, for good.
  if (!(await fs.stat(path)).isFile()) throw new Error(`${name} is not a regular file`);
  const fh = await fs.open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const { size } = await fh.stat();
    if (size > BUILD_FILE_LIMIT) throw new BadRequestError(`${name} is too large (${size} bytes): it can be at most ${BUILD_FILE_LIMIT} bytes`);
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

export async function build(deps: BuildDeps, contextDir: string, o: BuildOptions, out: (text: string) => void): Promise<string> {
  const { images } = deps;
  const dfPath = await scopedPath(contextDir, o.dockerfile || 'Dockerfile', true);
  const text = await readBounded(dfPath, o.dockerfile || 'Dockerfile').catch((e: unknown) => {
    if (e instanceof BadRequestError) throw e;
    throw new BadRequestError(`Cannot locate specified Dockerfile: ${o.dockerfile || 'Dockerfile'}`);
  });
  const ignoreText = await readBounded(join(contextDir, '.dockerignore'), '.dockerignore').catch((e: unknown) => {
    if (e instanceof BadRequestError) throw e;
    return '';
  });
  const ignored = dockerignore(ignoreText);
  let steps = parseDockerfile(text);
  if (o.target) {
    const idx = steps.findIndex((s) => s.cmd === 'FROM' && /\s+as\s+(\S+)\s*$/i.exec(s.rest)?.[1]?.toLowerCase() === o.target!.toLowerCase());
    if (idx < 0) throw new BadRequestError(`failed to reach build target ${o.target} in Dockerfile`);
    const end = steps.findIndex((s, i) => i > idx && s.cmd === 'FROM');
    if (end >= 0) steps = steps.slice(0, end);
  }
  const globalArgs: Record<string, string> = {};
  const usedArgs = new Set<string>();
  const stages: Stage[] = [];
  let st: Stage | undefined;
  const total = steps.length;
  let stepNo = 0;

  const commit = async (s: Stage, key: string, createdBy: string, diffId?: string): Promise<void> => {
    const cached = !o.noCache ? images.buildCacheLookup(key) : undefined;
    if (cached) {
      out(' ---> Using cache\n');
      s.config = clone(cached.config);
      s.imageId = cached.id;
      out(` ---> ${cached.id.slice(7, 19)}\n`);
      return;
    }
    const created = new Date().toISOString();
    const cfg = s.config;
    cfg.created = created;
    if (diffId) cfg.rootfs.diff_ids.push(diffId);
    (cfg.history ??= []).push({ created, created_by: createdBy, ...(diffId ? {} : { empty_layer: true }) });
    const rec = await images.commitImage(Buffer.from(JSON.stringify(cfg)), []);
    await images.recordBuildStep(rec.id, s.imageId, key);
    s.config = clone(rec.config);
    s.imageId = rec.id;
    out(` ---> ${rec.id.slice(7, 19)}\n`);
  };
  const stepKey = (s: Stage, ins: string, extra: unknown) =>
    `sha256:${createHash('sha256').update(JSON.stringify([s.imageId ?? 'scratch', ins, extra])).digest('hex')}`;

  for (let n = 0; n < steps.length; n++) {
    const ins = steps[n]!;
    if (!ins.trigger) out(`Step ${++stepNo}/${total} : ${ins.original}\n`);
    if (ins.cmd === 'FROM') {
      const words = splitWords(expand(ins.rest, { ...globalArgs }));
      const name = words.length === 3 && words[1]!.toLowerCase() === 'as' ? words[2]!.toLowerCase() : undefined;
      if (words.length !== 1 && !name) throw new DockerfileError(`dockerfile parse error line ${ins.line}: FROM requires either one or three arguments`);
      const base = words[0]!;
      const fromStage = stages.find((x) => x.name === base.toLowerCase());
      if (fromStage) {
        st = { name, config: clone(fromStage.config), imageId: fromStage.imageId, args: {} };
      } else if (base === 'scratch') {
        st = { name, config: { architecture: goArch(), os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [] }, history: [] }, args: {} };
        out(' ---> \n');
      } else {
        let img = images.find(base);
        if (!img) {
          if (!deps.pull) throw new NotFoundError(`pull access denied for ${base}: no such image`);
          img = await deps.pull(base);
        }
        st = { name, config: clone(img.config), imageId: img.id, args: {} };
        out(` ---> ${img.id.slice(7, 19)}\n`);
      }
      st.config.config ??= {};
      delete st.config.container_config;
      // The base image's ONBUILD triggers run first, as part of FROM; the new image does not inherit them.
      const triggers = fromStage ? [] : st.config.config.OnBuild ?? [];
      if (triggers.length) {
        out(`# Executing ${triggers.length} build trigger${triggers.length > 1 ? 's' : ''}\n`);
        steps.splice(n + 1, 0, ...parseDockerfile(triggers.join('\n'), false).map((t) => ({ ...t, line: ins.line, trigger: true })));
      }
      st.config.config.OnBuild = null;
      stages.push(st);
      continue;
    }
    if (!st) {
      if (ins.cmd !== 'ARG') throw new DockerfileError(`dockerfile parse error line ${ins.line}: ${ins.cmd} before the first FROM`);
      for (const [k, v] of argPairs(ins)) { globalArgs[k] = o.buildArgs[k] ?? v ?? ''; usedArgs.add(k); }
      continue;
    }
    const s = st;
    const cfg = s.config.config!;
    const vars = () => ({ ...s.args, ...envMap(cfg) });
    const nop = (text: string) => `/bin/sh -c #(nop) ${text}`;
    switch (ins.cmd) {
      case 'ENV': {
        const pairs = parsePairs(ins.rest, ins.line, 'ENV').map(([k, v]) => [k, expand(v, vars())] as const);
        for (const [k, v] of pairs) setEnv(cfg, k, v);
        const txt = `ENV ${pairs.map(([k, v]) => `${k}=${v}`).join(' ')}`;
        await commit(s, stepKey(s, txt, null), nop(` ${txt}`));
        break;
      }
      case 'ARG': {
        for (const [k, v] of argPairs(ins)) {
          usedArgs.add(k);
          s.args[k] = o.buildArgs[k] ?? (v !== undefined ? expand(v, vars()) : globalArgs[k] ?? '');
        }
        await commit(s, stepKey(s, ins.original, s.args), nop(ins.original));
        break;
      }
      case 'LABEL': {
        const pairs = parsePairs(ins.rest, ins.line, 'LABEL').map(([k, v]) => [expand(k, vars()), expand(v, vars())] as const);
        cfg.Labels = { ...(cfg.Labels ?? {}), ...Object.fromEntries(pairs) };
        const txt = `LABEL ${pairs.map(([k, v]) => `${k}=${v}`).join(' ')}`;
        await commit(s, stepKey(s, txt, null), nop(txt));
        break;
      }
      case 'WORKDIR': {
        const dir = posix.resolve(cfg.WorkingDir || '/', expand(ins.rest, vars()));
        cfg.WorkingDir = dir;
        // The directory must exist for RUN; a layer makes it when no lower layer has it.
        const exists = await Promise.all(images.layerDirs({ config: s.config } as ImageRecord).map((l) => fs.stat(join(l, dir)).then((x) => x.isDirectory(), () => false)));
        let diffId: string | undefined;
        if (!exists.some(Boolean) && dir !== '/') {
          const tmp = images.scratchPath('workdir');
          const parts = dir.slice(1).split('/');
          await writeLayer(tmp, [], { parents: parts.map((_p, i) => parts.slice(0, i + 1).join('/')) });
          try { diffId = await images.addLayer(tmp); } finally { await fs.rm(tmp, { force: true }); }
        }
        await commit(s, stepKey(s, `WORKDIR ${dir}`, diffId ?? null), nop(`WORKDIR ${dir}`), diffId);
        break;
      }
      case 'USER': cfg.User = expand(ins.rest, vars()); await commit(s, stepKey(s, `USER ${cfg.User}`, null), nop(`USER ${cfg.User}`)); break;
      case 'STOPSIGNAL': cfg.StopSignal = expand(ins.rest, vars()); await commit(s, stepKey(s, ins.original, cfg.StopSignal), nop(ins.original)); break;
      case 'MAINTAINER': s.config.author = ins.rest; await commit(s, stepKey(s, ins.original, null), nop(ins.original)); break;
      case 'EXPOSE': {
        const ports = splitWords(expand(ins.rest, vars())).map((p) => (p.includes('/') ? p.toLowerCase() : `${p}/tcp`));
        cfg.ExposedPorts = { ...(cfg.ExposedPorts ?? {}), ...Object.fromEntries(ports.map((p) => [p, {}])) };
        await commit(s, stepKey(s, `EXPOSE ${ports.join(' ')}`, null), nop(`EXPOSE ${ports.join(' ')}`));
        break;
      }
      case 'VOLUME': {
        const vols = ins.json ?? splitWords(expand(ins.rest, vars()));
        cfg.Volumes = { ...(cfg.Volumes ?? {}), ...Object.fromEntries(vols.map((v) => [v, {}])) };
        await commit(s, stepKey(s, `VOLUME ${vols.join(' ')}`, null), nop(`VOLUME [${vols.join(' ')}]`));
        break;
      }
      case 'CMD':
      case 'ENTRYPOINT': {
        const argv = ins.json ?? (ins.rest ? [...(cfg.Shell ?? ['/bin/sh', '-c']), ins.rest] : []);
        if (ins.cmd === 'CMD') cfg.Cmd = argv;
        else { cfg.Entrypoint = argv; cfg.Cmd = null; }
        const txt = `${ins.cmd} ${JSON.stringify(argv)}`;
        await commit(s, stepKey(s, txt, null), nop(txt));
        break;
      }
      case 'RUN': {
        const argv = ins.json ?? [...(cfg.Shell ?? ['/bin/sh', '-c']), ins.rest];
        // ARGs reach RUN as environment variables and belong to its cache key, as in Docker.
        const env = { ...s.args, ...envMap(cfg) };
        const envList = [...(cfg.Env?.length ? [] : [DEFAULT_PATH]), ...Object.entries(env).map(([k, v]) => `${k}=${v}`)];
        const key = stepKey(s, `RUN ${JSON.stringify(argv)}`, { env: envList, user: cfg.User, wd: cfg.WorkingDir });
        const cached = !o.noCache ? images.buildCacheLookup(key) : undefined;
        if (cached) { await commit(s, key, ''); break; }
        if (!s.imageId) throw new BadRequestError('RUN needs a base image with a shell: FROM scratch has none');
        const diffId = await runStep(deps, s.imageId, argv, envList, cfg, out);
        await commit(s, key, argv.slice(0, 2).join(' ') === '/bin/sh -c' ? `/bin/sh -c ${argv[2]}` : JSON.stringify(argv), diffId);
        break;
      }
      case 'COPY':
      case 'ADD': {
        const words = ins.json ?? splitWords(expand(ins.rest, vars())).map((w) => w.replace(/^"(.*)"$/, '$1'));
        if (words.length < 2) throw new DockerfileError(`dockerfile parse error line ${ins.line}: ${ins.cmd} requires at least two arguments`);
        const srcs = words.slice(0, -1);
        const destRaw = words[words.length - 1]!;
        const dest = posix.resolve(cfg.WorkingDir || '/', destRaw);
        const destIsDir = destRaw.endsWith('/') || srcs.length > 1 || destRaw === '.';
        let owner: { uid: number; gid: number } | undefined;
        if (ins.flags.chown) owner = await resolveOwner(images.layerDirs({ config: s.config } as ImageRecord), expand(ins.flags.chown, vars()));
        const from = ins.flags.from;
        const tmp = images.scratchPath('copy');
        const unpackDirs: string[] = [];
        let mounted: string | undefined;
        try {
          let srcRoot = contextDir;
          let skip: ((rel: string) => boolean) | undefined = ignored;
          if (from) {
            const stage = stages.find((x) => x.name === from.toLowerCase()) ?? (/^\d+$/.test(from) ? stages[Number(from)] : undefined);
            const img = stage ? (stage.imageId ? images.get(stage.imageId) : undefined) : images.find(from) ?? (deps.pull ? await deps.pull(from) : undefined);
            if (!img) throw new NotFoundError(`invalid from flag value ${from}: no such stage or image`);
            mounted = images.scratchPath('from');
            await mountOverlay(images.layerDirs(img), join(mounted, 'upper'), join(mounted, 'work'), join(mounted, 'root'));
            srcRoot = join(mounted, 'root');
            skip = undefined;
          }
          const trees: TreeSpec[] = [];
          for (const src of srcs) {
            const matches = await globSources(srcRoot, src, from ? undefined : ignored);
            if (matches.length === 0) throw new BadRequestError(`${ins.cmd} failed: file not found in build context or excluded by .dockerignore: stat ${src}: file does not exist`);
            for (const m of matches) {
              const abs = await scopedPath(srcRoot, m);
              const st = await fs.lstat(abs);
              // ADD unpacks a local tar archive (plain, gzip, bzip2, xz) into the destination, as Docker does.
              if (ins.cmd === 'ADD' && !from && st.isFile() && (await run('tar', ['-tf', abs])).code === 0) {
                const unpacked = images.scratchPath('add');
                unpackDirs.push(unpacked);
                await fs.mkdir(unpacked, { recursive: true });
                await runOk('tar', ['--numeric-owner', '-xpf', abs, '-C', unpacked]);
                trees.push({ src: unpacked, dest: dest.slice(1), ...(owner ?? {}) });
                continue;
              }
              const isDir = st.isDirectory();
              const target = isDir || !destIsDir ? dest : posix.join(dest, posix.basename(m));
              const relBase = normalize(`/${m}`).slice(1).replace(/\/+$/, '');
              trees.push({ src: abs, dest: target.slice(1), ...(owner ?? { uid: 0, gid: 0 }), ...(skip ? { skip: (r: string) => skip!(relBase ? `${relBase}/${r}` : r) } : {}) });
            }
          }
          const parentDirs = (p: string) => { const parts = p.slice(1).split('/').slice(0, -1); return parts.map((_x, i) => parts.slice(0, i + 1).join('/')).filter(Boolean); };
          await writeLayer(tmp, trees, { parents: [...new Set(trees.flatMap((t) => parentDirs(`/${t.dest}`)))] });
          const diffId = await images.addLayer(tmp);
          const txt = `${ins.cmd} ${from ? `--from=${from} ` : ''}${srcs.join(' ')} ${dest}`;
          await commit(s, stepKey(s, txt, diffId), nop(`${ins.cmd} ${diffId.slice(0, 19)} in ${dest}`), diffId);
        } finally {
          await fs.rm(tmp, { force: true });
          for (const d of unpackDirs) await fs.rm(d, { recursive: true, force: true });
          if (mounted) { await unmount(join(mounted, 'root')).catch(() => undefined); await fs.rm(mounted, { recursive: true, force: true }); }
        }
        break;
      }
      case 'SHELL': {
        if (!ins.json || ins.json.length === 0) throw new DockerfileError(`dockerfile parse error line ${ins.line}: SHELL requires the arguments to be in JSON form`);
        cfg.Shell = ins.json;
        const txt = `SHELL ${JSON.stringify(ins.json)}`;
        await commit(s, stepKey(s, txt, null), nop(txt));
        break;
      }
      case 'HEALTHCHECK': {
        const words = splitWords(ins.rest);
        const kind = (words[0] ?? '').toUpperCase();
        let test: string[];
        if (kind === 'NONE') test = ['NONE'];
        else if (kind === 'CMD') {
          const after = ins.rest.replace(/^\S+\s*/, '');
          let json: unknown;
          try { json = JSON.parse(after); } catch { json = undefined; }
          test = Array.isArray(json) && json.every((x) => typeof x === 'string') ? ['CMD', ...(json as string[])] : ['CMD-SHELL', after];
        } else throw new DockerfileError(`dockerfile parse error line ${ins.line}: HEALTHCHECK takes NONE or CMD`);
        const f = ins.flags;
        cfg.Healthcheck = {
          Test: test,
          ...(f.interval ? { Interval: parseDuration(f.interval) } : {}),
          ...(f.timeout ? { Timeout: parseDuration(f.timeout) } : {}),
          ...(f['start-period'] ? { StartPeriod: parseDuration(f['start-period']) } : {}),
          ...(f.retries ? { Retries: Number(f.retries) } : {}),
        };
        const txt = `HEALTHCHECK ${JSON.stringify(cfg.Healthcheck)}`;
        await commit(s, stepKey(s, txt, null), nop(txt));
        break;
      }
      case 'ONBUILD': {
        const inner = /^\s*(\S+)/.exec(ins.rest)?.[1]?.toUpperCase();
        if (inner === 'ONBUILD' || inner === 'FROM' || inner === 'MAINTAINER') throw new DockerfileError(`dockerfile parse error line ${ins.line}: ${inner} isn't allowed as an ONBUILD trigger`);
        parseDockerfile(ins.rest, false);
        cfg.OnBuild = [...(cfg.OnBuild ?? []), ins.rest];
        await commit(s, stepKey(s, ins.original, null), nop(ins.original));
        break;
      }
    }
  }
  if (!st?.imageId) {
    // Only FROM scratch: an image of no layers, as Docker makes it.
    await commitFinal(st!);
  }
  let finalId = st!.imageId!;
  if (Object.keys(o.labels).length) {
    st!.config.config!.Labels = { ...(st!.config.config!.Labels ?? {}), ...o.labels };
    const rec = await images.commitImage(Buffer.from(JSON.stringify(st!.config)), []);
    finalId = rec.id;
  }
  const unused = Object.keys(o.buildArgs).filter((k) => !usedArgs.has(k));
  if (unused.length) out(`[Warning] One or more build-args [${unused.join(' ')}] were not consumed\n`);
  for (const t of o.tags) await images.tag(finalId, t);
  return finalId;

  async function commitFinal(s: Stage): Promise<void> {
    const rec = await images.commitImage(Buffer.from(JSON.stringify(s.config)), []);
    s.imageId = rec.id;
  }
}

function argPairs(ins: Instruction): Array<[string, string | undefined]> {
  return splitWords(ins.rest).map((w) => {
    const eq = w.indexOf('=');
    return eq < 0 ? [w, undefined] : [w.slice(0, eq), w.slice(eq + 1).replace(/^"(.*)"$/, '$1')];
  });
}

/** The first layer (topmost first) that has the file, read inside that layer's root. */
async function readFromLayers(layers: string[], path: string): Promise<string | undefined> {
  for (const l of layers) {
    const p = await scopedPath(l, path, true);
    const text = await fs.readFile(p, 'utf8').catch(() => undefined);
    if (text !== undefined) return text;
  }
  return undefined;
}

/** `--chown=user[:group]` with names looked up in the image's /etc/passwd and /etc/group, as Docker does. */
export async function resolveOwner(layers: string[], spec: string): Promise<{ uid: number; gid: number }> {
  const [user, group] = spec.split(':') as [string, string | undefined];
  const lookup = async (file: string, name: string, field: number): Promise<{ id: number; gid?: number }> => {
    if (/^\d+$/.test(name)) return { id: Number(name) };
    const text = await readFromLayers(layers, file);
    const row = text?.split('\n').map((l) => l.split(':')).find((f) => f[0] === name);
    if (!row || !/^\d+$/.test(row[field] ?? '')) throw new BadRequestError(`unable to convert uid/gid chown string to host mapping: can't find ${file === '/etc/passwd' ? 'uid' : 'gid'} for ${file === '/etc/passwd' ? 'user' : 'group'} ${name}`);
    return { id: Number(row[field]), ...(file === '/etc/passwd' && /^\d+$/.test(row[3] ?? '') ? { gid: Number(row[3]) } : {}) };
  };
  const u = await lookup('/etc/passwd', user, 2);
  // Docker: without a group, a numeric user keeps gid = uid, a named one takes its primary group.
  const gid = group !== undefined ? (await lookup('/etc/group', group, 2)).id : /^\d+$/.test(user) ? u.id : u.gid ?? u.id;
  return { uid: u.id, gid };
}

/** COPY sources: a path, or a pattern with * and ? in its last component. */
async function globSources(root: string, src: string, ignored?: (rel: string) => boolean): Promise<string[]> {
  const rel = normalize(`/${src}`).slice(1).replace(/\/+$/, '');
  if (!/[*?[]/.test(rel)) {
    if (rel && ignored?.(rel)) return [];
    try { await fs.lstat(await scopedPath(root, rel)); return [rel]; } catch { return []; }
  }
  const slash = rel.lastIndexOf('/');
  const dir = slash >= 0 ? rel.slice(0, slash) : '';
  const re = new RegExp(`^${rel.slice(slash + 1).replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  const names = await fs.readdir(await scopedPath(root, dir, true)).catch(() => [] as string[]);
  return names.filter((n) => re.test(n)).map((n) => (dir ? `${dir}/${n}` : n)).filter((p) => !ignored?.(p)).sort();
}

/** Runs one RUN step in a container and returns the diff id of what it changed. */
async function runStep(deps: BuildDeps, imageId: string, argv: string[], env: string[], cfg: ImageRuntimeConfig, out: (t: string) => void): Promise<string> {
  const { engine, images } = deps;
  const { Id } = await engine.create({
    Image: imageId, Cmd: argv, Entrypoint: [], Env: env, WorkingDir: cfg.WorkingDir ?? '', User: cfg.User ?? '',
    Tty: false, AttachStdout: true, AttachStderr: true, HostConfig: { NetworkMode: 'bridge' },
  }, undefined);
  out(` ---> Running in ${Id.slice(0, 12)}\n`);
  const tmp = images.scratchPath('run');
  try {
    const waiting = engine.wait(Id, 'next-exit');
    await engine.start(Id);
    // The step's output streams while it runs; the follower stops once the exit is known and read.
    let exited = false;
    const stop = new AbortController();
    const following = readLogs(engine.logPath(engine.get(Id)), { stdout: true, stderr: true, since: 0n, until: 0n, timestamps: false },
      (e) => out(e.data.toString('utf8')), { isDone: () => exited, signal: stop.signal });
    let StatusCode: number;
    try {
      ({ StatusCode } = await waiting);
    } finally {
      exited = true;
      await Promise.race([following, new Promise((r) => setTimeout(r, 5000))]);
      stop.abort();
    }
    if (StatusCode !== 0) {
      const shown = argv.slice(0, 2).join(' ') === '/bin/sh -c' ? `/bin/sh -c ${argv[2]}` : JSON.stringify(argv);
      throw new BuildError(`The command '${shown}' returned a non-zero code: ${StatusCode}`, StatusCode);
    }
    await writeLayer(tmp, [{ src: join(deps.root, 'containers', Id, 'diff'), dest: '' }], { whiteouts: true });
    return await images.addLayer(tmp);
  } finally {
    await fs.rm(tmp, { force: true });
    // volumes: an earlier VOLUME gives the step anonymous volumes, which go with the container.
    await engine.remove(Id, { force: true, volumes: true }).catch(() => undefined);
    out(`Removing intermediate container ${Id.slice(0, 12)}\n`);
  }
}
