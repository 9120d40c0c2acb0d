import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { readJson, removeStaleTemps, writeJsonAtomic } from '../store/atomic.js';
import {
  atLeast, CniError, describeFailure, formatArgs, negotiateVersion, parseResult, parseVersionAnswer, pluginInput,
  type CniResult, type ConfList,
} from './spec.js';

/**
 * A CNI runtime, as libcni is one: runs a configuration list's plugins as executables, ADD in
 * order with each result as the next plugin's `prevResult`, DEL in reverse with the cached
 * result, CHECK, STATUS and GC where the list's version has them. What ADD returned is cached
 * under berth's root before and after the plugins run, so a berthd killed at any moment can DEL
 * exactly what was added.
 */

export interface RunnerOptions {
  /** Where plugin executables are looked for, in order (CNI_PATH). */
  pluginDirs: string[];
  /** Where attachments' results are cached. */
  cacheDir: string;
  /** How long one plugin may run before it is killed. */
  timeoutMs?: number;
}

/** One container's interface on one list, as the runtime names it to the plugins. */
export interface Attachment {
  containerId: string;
  /** The container's namespace; '' on a DEL once it is gone. */
  netns: string;
  ifname: string;
  args?: Record<string, string>;
  /** Values for the capabilities plugins may declare (portMappings, mac, ips …). */
  runtime?: Record<string, unknown>;
}

/** An attachment as cached: enough to DEL, CHECK or GC it with no other record. */
export interface CachedAttachment extends Attachment {
  key: string;
  /** Who the attachment belongs to (the berth network's id), for GC's valid list. */
  owner: string;
  list: ConfList;
  version: string;
  /** Absent while ADD runs (a crash then leaves the entry for a DEL without prevResult). */
  result?: CniResult;
  /** A DEL failed: the next GC pass tries it again. */
  deleteFailed?: boolean;
}

const KEY = /^[a-zA-Z0-9_.-]+$/;

export class CniRunner {
  constructor(private readonly o: RunnerOptions) {}

  /** The executable of a plugin type (libcni's words when it is nowhere). */
  pluginPath(type: string): string {
    for (const d of this.o.pluginDirs) {
      const p = join(d, type);
      if (existsSync(p)) return p;
    }
    throw new CniError(7, `failed to find plugin "${type}" in path [${this.o.pluginDirs.join(' ')}]`);
  }

  /** Runs one plugin; resolves its stdout, or throws the CniError it answered. */
  exec(type: string, command: string, env: Record<string, string>, input: unknown): Promise<string> {
    const path = this.pluginPath(type);
    return new Promise((resolve, reject) => {
      const child = spawn(path, [], {
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: command, CNI_PATH: this.o.pluginDirs.join(':'), ...env },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let timedOut = false;
      const timer = this.o.timeoutMs ? setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, this.o.timeoutMs) : undefined;
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => err.push(d));
      child.stdin.on('error', () => undefined);
      child.on('error', (e) => { clearTimeout(timer); reject(new CniError(5, `CNI plugin ${type} could not run: ${e.message}`)); });
      child.on('close', (code) => {
        clearTimeout(timer);
        const stdout = Buffer.concat(out).toString();
        if (timedOut) return reject(new CniError(11, `CNI plugin ${type} did not finish ${command} within ${this.o.timeoutMs} ms: killed`));
        if (code === 0) return resolve(stdout);
        reject(describeFailure(type, command, code, stdout, Buffer.concat(err).toString()));
      });
      child.stdin.end(JSON.stringify(input));
    });
  }

  /** Every plugin of the list found, and the version the list runs at (VERSION asked of each plugin). */
  async prepare(list: ConfList): Promise<string> {
    const types = [...new Set(list.plugins.map((p) => p.type))];
    for (const t of types) this.pluginPath(t);
    const answers = await Promise.all(types.map(async (t) => [t, parseVersionAnswer(await this.exec(t, 'VERSION', {}, { cniVersion: list.cniVersion }))] as const));
    return negotiateVersion(list, new Map(answers));
  }

  private env(a: Attachment): Record<string, string> {
    return { CNI_CONTAINERID: a.containerId, CNI_NETNS: a.netns, CNI_IFNAME: a.ifname, CNI_ARGS: formatArgs(a.args ?? {}) };
  }

  private file(key: string): string {
    if (!KEY.test(key)) throw new Error(`bad CNI cache key ${key}`);
    return join(this.o.cacheDir, `${key}.json`);
  }

  private async save(e: CachedAttachment): Promise<void> {
    await fs.mkdir(this.o.cacheDir, { recursive: true, mode: 0o700 });
    await writeJsonAtomic(this.file(e.key), e);
  }

  cached(key: string): Promise<CachedAttachment | undefined> {
    return readJson<CachedAttachment>(this.file(key));
  }

  async all(): Promise<CachedAttachment[]> {
    await fs.mkdir(this.o.cacheDir, { recursive: true, mode: 0o700 });
    await removeStaleTemps(this.o.cacheDir);
    const out: CachedAttachment[] = [];
    for (const f of (await fs.readdir(this.o.cacheDir)).sort()) {
      if (!f.endsWith('.json')) continue;
      const e = await readJson<CachedAttachment>(join(this.o.cacheDir, f));
      if (e) out.push(e);
    }
    return out;
  }

  /**
   * ADD through the list. A plugin that fails has the whole list DEL'd (in reverse, with the
   * result so far), so nothing is left half-made; the plugin's error is what the caller sees.
   */
  async add(key: string, owner: string, list: ConfList, version: string, a: Attachment): Promise<CniResult> {
    const entry: CachedAttachment = { ...a, key, owner, list, version };
    await this.save(entry);
    let prev: CniResult | undefined;
    try {
      for (const p of list.plugins) {
        const out = await this.exec(p.type, 'ADD', this.env(a), pluginInput(list, p, version, a.runtime ?? {}, prev));
        prev = parseResult(out, p.type);
      }
      if (!prev) throw new CniError(7, `configuration ${list.name} gave no result`);
    } catch (e) {
      if (prev) entry.result = prev;
      await this.delEntry(entry).catch((u: Error) => console.error(`berthd: undoing the failed CNI ADD on ${list.name}: ${u.message}`));
      throw e;
    }
    entry.result = prev;
    await this.save(entry);
    return prev;
  }

  /**
   * DEL through the list in reverse, with the cached result as prevResult (0.4.0 and later). DEL is
   * idempotent for plugins (SPEC.md), so it runs whole even where a crash cut the ADD short. Every
   * plugin is asked even after one fails; the entry is kept, marked, for GC to retry.
   */
  async del(key: string, netns?: string): Promise<void> {
    const e = await this.cached(key);
    if (!e) return;
    if (netns !== undefined) e.netns = netns;
    await this.delEntry(e);
  }

  private async delEntry(e: CachedAttachment): Promise<void> {
    const errors: Error[] = [];
    const prev = e.result && atLeast(e.version, '0.4.0') ? e.result : undefined;
    for (const p of [...e.list.plugins].reverse()) {
      await this.exec(p.type, 'DEL', this.env(e), pluginInput(e.list, p, e.version, e.runtime ?? {}, prev)).catch((x: Error) => errors.push(x));
    }
    if (errors.length) {
      e.deleteFailed = true;
      await this.save(e);
      throw errors[0];
    }
    await fs.rm(this.file(e.key), { force: true });
  }

  /** CHECK through the list with the cached result (0.4.0 and later, unless the list disables it). */
  async check(key: string): Promise<'checked' | 'not supported'> {
    const e = await this.cached(key);
    if (!e?.result) throw new CniError(3, `no CNI attachment ${key}`);
    if (!atLeast(e.version, '0.4.0') || e.list.disableCheck) return 'not supported';
    for (const p of e.list.plugins) await this.exec(p.type, 'CHECK', this.env(e), pluginInput(e.list, p, e.version, e.runtime ?? {}, e.result));
    return 'checked';
  }

  /** STATUS of every plugin (1.1.0): throws the first plugin's "not available". */
  async status(list: ConfList, version: string): Promise<void> {
    if (!atLeast(version, '1.1.0')) return;
    for (const p of list.plugins) await this.exec(p.type, 'STATUS', {}, pluginInput(list, p, version, {}));
  }

  /**
   * GC (1.1.0, unless the list disables it): plugins free what belongs to none of `valid`. The
   * attachments are named under both keys libcni sends, the spec's and its older spelling.
   */
  async gc(list: ConfList, version: string, valid: Array<{ containerID: string; ifname: string }>): Promise<void> {
    if (!atLeast(version, '1.1.0') || list.disableGC) return;
    const extra = { 'cni.dev/valid-attachments': valid, 'cni.dev/attachments': valid };
    const errors: Error[] = [];
    for (const p of list.plugins) await this.exec(p.type, 'GC', {}, pluginInput(list, p, version, {}, undefined, extra)).catch((e: Error) => errors.push(e));
    if (errors[0]) throw errors[0];
  }
}
