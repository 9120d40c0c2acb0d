/** Registry commands: pull, push, login, logout, with credentials kept in docker's config.json format. */
import { promises as fs } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import type { Command } from 'commander';
import { CliExit, command, type CliContext } from '../context.js';
import { DaemonError } from '../client.js';

const HUB_KEY = 'https://index.docker.io/v1/';

interface ConfigFile { auths?: Record<string, { auth?: string; identitytoken?: string }>; [k: string]: unknown }

/** $DOCKER_CONFIG/config.json or ~/.docker/config.json, so `docker login` and `berth login` share credentials. */
function configPath(): string {
  return join(process.env.DOCKER_CONFIG || join(homedir(), '.docker'), 'config.json');
}

async function readConfig(): Promise<ConfigFile> {
  try { return JSON.parse(await fs.readFile(configPath(), 'utf8')) as ConfigFile; } catch { return {}; }
}

async function writeConfig(cfg: ConfigFile): Promise<void> {
  const p = configPath();
  await fs.mkdir(join(p, '..'), { recursive: true, mode: 0o700 });
  await fs.writeFile(`${p}.tmp`, JSON.stringify(cfg, null, '\t') + '\n', { mode: 0o600 });
  await fs.rename(`${p}.tmp`, p);
}

/** The registry a reference lives on, as config.json keys it. */
function registryOf(ref: string): string {
  const first = ref.split('/')[0]!;
  const hasHost = ref.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost');
  return !hasHost || first === 'docker.io' || first === 'index.docker.io' ? HUB_KEY : first;
}

/** docker pull's last line names the image in full: docker.io/library/busybox:latest. */
function canonical(name: string): string {
  if (registryOf(name) !== HUB_KEY) return name;
  const path = name.replace(/^(docker\.io|index\.docker\.io)\//, '');
  return `docker.io/${path.includes('/') ? path : `library/${path}`}`;
}

function serverKey(server: string | undefined): string {
  if (!server) return HUB_KEY;
  const s = server.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
  return s === 'docker.io' || s === 'index.docker.io' || s === 'registry-1.docker.io' ? HUB_KEY : s;
}

/** X-Registry-Auth for a registry from config.json, or nothing when we hold no credentials for it. */
async function authHeader(ref: string): Promise<Record<string, string>> {
  const key = registryOf(ref);
  const auths = (await readConfig()).auths ?? {};
  const entry = auths[key] ?? auths[`https://${key}`] ?? auths[`http://${key}`];
  if (!entry?.auth && !entry?.identitytoken) return {};
  const plain = Buffer.from(entry.auth ?? '', 'base64').toString('utf8');
  const i = plain.indexOf(':');
  const cfg = { username: i > 0 ? plain.slice(0, i) : '', password: i > 0 ? plain.slice(i + 1) : '', serveraddress: key, ...(entry.identitytoken ? { identitytoken: entry.identitytoken } : {}) };
  return { 'X-Registry-Auth': Buffer.from(JSON.stringify(cfg)).toString('base64url') };
}

interface Msg { status?: string; id?: string; progress?: string; progressDetail?: { current?: number; total?: number }; error?: string; errorDetail?: { message?: string } }

/**
 * Renders a pull/push progress stream: on a terminal one line per layer redrawn in place as docker
 * does; otherwise one line per change of a layer's state (no byte counts), which logs well.
 */
export async function renderProgress(src: Readable, out: Writable & { isTTY?: boolean } = process.stdout): Promise<void> {
  const tty = Boolean(out.isTTY);
  const lines = new Map<string, number>();
  const lastStatus = new Map<string, string>();
  let count = 0;
  let failure: string | undefined;
  const show = (m: Msg) => {
    if (m.error || m.errorDetail?.message) { failure = m.errorDetail?.message ?? m.error; return; }
    if (m.status === undefined) return;
    const text = m.id ? `${m.id}: ${m.status}${m.progress ? ` ${m.progress}` : ''}` : m.status;
    if (!m.id) { out.write(`${text}\n`); count++; lines.clear(); return; }
    if (tty) {
      const at = lines.get(m.id);
      if (at === undefined) { lines.set(m.id, count); out.write(`${text}\n`); count++; return; }
      const up = count - at;
      out.write(`\x1b[${up}A\r\x1b[2K${text}\r\x1b[${up}B`);
      return;
    }
    if (lastStatus.get(m.id) === m.status) return;
    lastStatus.set(m.id, m.status);
    out.write(`${m.id}: ${m.status}\n`);
  };
  let buf = '';
  for await (const chunk of src) {
    buf += (chunk as Buffer).toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) try { show(JSON.parse(line) as Msg); } catch { out.write(`${line}\n`); }
    }
  }
  if (buf.trim()) try { show(JSON.parse(buf) as Msg); } catch { out.write(`${buf}\n`); }
  if (failure !== undefined) throw new CliExit(failure, 1);
}

function splitNameTag(ref: string): { name: string; tag?: string } {
  const at = ref.indexOf('@');
  if (at >= 0) return { name: ref.slice(0, at), tag: ref.slice(at + 1) };
  const colon = ref.lastIndexOf(':');
  if (colon > ref.lastIndexOf('/')) return { name: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { name: ref };
}

export function registryCommands(parent: Command, ctx: CliContext, grouped: boolean): void {
  parent.addCommand(command('pull', 'Download an image from a registry')
    .option('--platform <string>', 'Set platform if server is multi-platform capable (os/arch[/variant])')
    .option('-q, --quiet', 'Suppress verbose output')
    .argument('<name>', 'NAME[:TAG|@DIGEST]')
    .action(async (ref: string, opts: { platform?: string; quiet?: boolean }) => {
      const { name, tag } = splitNameTag(ref);
      if (!tag) process.stdout.write('Using default tag: latest\n');
      const res = await ctx.client().stream('POST', '/images/create', {
        query: { fromImage: name, tag: tag ?? 'latest', platform: opts.platform }, headers: await authHeader(name),
      });
      await renderProgress(res, opts.quiet ? new Writable({ write: (_c, _e, cb) => cb() }) : process.stdout);
      process.stdout.write(`${canonical(name)}${tag === undefined ? ':latest' : ref.includes('@') ? `@${tag}` : `:${tag}`}\n`);
    }));

  parent.addCommand(command('push', 'Upload an image to a registry')
    .option('-a, --all-tags', 'Push all tags of an image to the repository')
    .option('-q, --quiet', 'Suppress verbose output')
    .argument('<name>', 'NAME[:TAG]')
    .action(async (ref: string, opts: { allTags?: boolean; quiet?: boolean }) => {
      const { name, tag } = splitNameTag(ref);
      if (!tag && !opts.allTags) process.stdout.write('Using default tag: latest\n');
      const res = await ctx.client().stream('POST', `/images/${encodeURIComponent(name)}/push`, {
        query: { tag: opts.allTags ? undefined : tag ?? 'latest' }, headers: await authHeader(name),
      });
      await renderProgress(res);
    }));

  if (grouped) return;

  parent.addCommand(command('login', 'Log in to a registry')
    .option('-u, --username <string>', 'Username')
    .option('-p, --password <string>', 'Password')
    .option('--password-stdin', 'Take the password from stdin')
    .argument('[server]')
    .action(async (server: string | undefined, opts: { username?: string; password?: string; passwordStdin?: boolean }) => {
      let password = opts.password;
      if (opts.passwordStdin) {
        if (opts.password) throw new CliExit('--password and --password-stdin are mutually exclusive', 1);
        const chunks: Buffer[] = [];
        for await (const c of process.stdin) chunks.push(c as Buffer);
        password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
      }
      if (!opts.username || password === undefined) throw new CliExit('Error: Cannot perform an interactive login from a non TTY device: use -u and -p or --password-stdin', 1);
      const key = serverKey(server);
      try {
        await ctx.client().json('POST', '/auth', { body: { username: opts.username, password, serveraddress: key } });
      } catch (e) {
        if (e instanceof DaemonError) throw new CliExit(`Error response from daemon: ${e.message}`, 1);
        throw e;
      }
      const cfg = await readConfig();
      (cfg.auths ??= {})[key] = { auth: Buffer.from(`${opts.username}:${password}`).toString('base64') };
      await writeConfig(cfg);
      process.stdout.write(`WARNING! Your password will be stored unencrypted in ${configPath()}.\n\nLogin Succeeded\n`);
    }));

  parent.addCommand(command('logout', 'Log out from a registry')
    .argument('[server]')
    .action(async (server: string | undefined) => {
      const key = serverKey(server);
      const cfg = await readConfig();
      if (!cfg.auths?.[key]) {
        process.stdout.write(`Not logged in to ${key}\n`);
        return;
      }
      delete cfg.auths[key];
      await writeConfig(cfg);
      process.stdout.write(`Removing login credentials for ${key}\n`);
    }));
}
