import { promises as fs } from 'node:fs';
import { join } from 'node:path';

/**
 * Where Docker's legacy (v1) plugins are found, as moby's pkg/plugins looks: a unix socket
 * `<sockets>/NAME.sock` or `<sockets>/NAME/NAME.sock`, else a spec file `NAME.spec` (one URL) or
 * `NAME.json` ({"Name","Addr"}) in each spec directory, under the same two layouts. berthd takes
 * the directories as options (--plugin-dir, --plugin-spec-dir) so tests never use the real ones.
 */
export interface PluginPaths {
  sockets: string;
  specs: string[];
}

export const DOCKER_PLUGIN_PATHS: PluginPaths = {
  sockets: '/run/docker/plugins',
  specs: ['/etc/docker/plugins', '/usr/lib/docker/plugins'],
};

/** Where a plugin answers: a unix socket path, or a TCP host:port (plain HTTP). */
export type PluginAddr = { unix: string } | { tcp: { host: string; port: number } };

export interface FoundPlugin { name: string; addr: PluginAddr; source: string }

/** A spec file that is there but says nothing usable: Docker's loader fails on it too. */
export class BadSpecError extends Error {}

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function candidates(base: string, name: string, ext: string): string[] {
  return [join(base, `${name}${ext}`), join(base, name, `${name}${ext}`)];
}

/** Parses a plugin address as a spec names it: unix:///path, tcp://host:port or http://host:port. */
export function parseAddr(text: string, source: string): PluginAddr {
  const t = text.trim();
  const m = /^([a-z]+):\/\/(.*)$/.exec(t);
  if (!m) throw new BadSpecError(`${source}: Unknown protocol`);
  const [, scheme, rest] = m;
  if (scheme === 'unix') {
    if (!rest!.startsWith('/')) throw new BadSpecError(`${source}: unix socket path must be absolute: ${t}`);
    return { unix: rest! };
  }
  if (scheme === 'tcp' || scheme === 'http') {
    const hp = /^\[?([^\]/]+?)\]?:(\d{1,5})\/?$/.exec(rest!);
    if (!hp || Number(hp[2]) > 65535) throw new BadSpecError(`${source}: expected host:port in ${t}`);
    return { tcp: { host: hp[1]!, port: Number(hp[2]) } };
  }
  throw new BadSpecError(`${source}: berth speaks to plugins over unix sockets and plain tcp/http, not ${scheme}`);
}

async function isSocket(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isSocket();
  } catch {
    return false;
  }
}

async function readIfExists(p: string): Promise<string | undefined> {
  try {
    return await fs.readFile(p, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
}

/** Looks a plugin up by name, in Docker's order; undefined when it is nowhere. */
export async function findPlugin(name: string, paths: PluginPaths): Promise<FoundPlugin | undefined> {
  // A name is a file name here: never a path that climbs out of the plugin directories.
  if (!NAME.test(name)) return undefined;
  for (const p of candidates(paths.sockets, name, '.sock')) {
    if (await isSocket(p)) return { name, addr: { unix: p }, source: p };
  }
  const specs: string[] = [];
  for (const dir of paths.specs) specs.push(...candidates(dir, name, '.spec'), ...candidates(dir, name, '.json'));
  for (const p of specs) {
    const text = await readIfExists(p);
    if (text === undefined) continue;
    if (p.endsWith('.json')) {
      let spec: { Addr?: unknown };
      try {
        spec = JSON.parse(text) as { Addr?: unknown };
      } catch (e) {
        throw new BadSpecError(`${p}: ${(e as Error).message}`);
      }
      if (typeof spec.Addr !== 'string') throw new BadSpecError(`${p}: no Addr`);
      return { name, addr: parseAddr(spec.Addr, p), source: p };
    }
    return { name, addr: parseAddr(text, p), source: p };
  }
  return undefined;
}
