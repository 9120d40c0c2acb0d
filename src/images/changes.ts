import { BadRequestError } from '../util/errors.js';
import type { ImageRuntimeConfig } from './types.js';

function jsonOrShell(arg: string): string[] {
  const t = arg.trim();
  if (t.startsWith('[')) {
    try {
      const v = JSON.parse(t) as unknown;
      if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
    } catch { /* fall through to shell form */ }
  }
  return ['/bin/sh', '-c', t];
}

function keyValues(arg: string): Array<[string, string]> {
  const t = arg.trim();
  // "ENV key value" (legacy single pair) when the first word has no '='.
  const firstSpace = t.search(/\s/);
  const firstWord = firstSpace < 0 ? t : t.slice(0, firstSpace);
  if (!firstWord.includes('=')) return [[firstWord, firstSpace < 0 ? '' : t.slice(firstSpace + 1).trim()]];
  const out: Array<[string, string]> = [];
  const re = /([^\s=]+)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(t))) {
    let v = m[2]!;
    if (v.startsWith('"')) v = JSON.parse(v) as string;
    else if (v.startsWith("'")) v = v.slice(1, -1);
    out.push([m[1]!, v]);
  }
  return out;
}

/** Applies `docker import --change` / `commit --change` Dockerfile instructions to an image config. */
export function applyChanges(cfg: ImageRuntimeConfig, changes: string[]): ImageRuntimeConfig {
  const out: ImageRuntimeConfig = { ...cfg };
  for (const change of changes) {
    const m = /^\s*(\w+)\s+([\s\S]*)$/.exec(change);
    if (!m) throw new BadRequestError(`dockerfile parse error: invalid change: ${change}`);
    const instr = m[1]!.toUpperCase();
    const arg = m[2]!;
    switch (instr) {
      case 'CMD': out.Cmd = jsonOrShell(arg); break;
      case 'ENTRYPOINT': out.Entrypoint = jsonOrShell(arg); break;
      case 'WORKDIR': out.WorkingDir = arg.trim(); break;
      case 'USER': out.User = arg.trim(); break;
      case 'STOPSIGNAL': out.StopSignal = arg.trim(); break;
      case 'ENV': {
        const env = [...(out.Env ?? [])];
        for (const [k, v] of keyValues(arg)) {
          const i = env.findIndex((e) => e.startsWith(`${k}=`));
          if (i >= 0) env[i] = `${k}=${v}`; else env.push(`${k}=${v}`);
        }
        out.Env = env;
        break;
      }
      case 'LABEL':
        out.Labels = { ...(out.Labels ?? {}), ...Object.fromEntries(keyValues(arg)) };
        break;
      case 'EXPOSE': {
        const ports = { ...(out.ExposedPorts ?? {}) };
        for (const p of arg.trim().split(/\s+/)) ports[p.includes('/') ? p : `${p}/tcp`] = {};
        out.ExposedPorts = ports;
        break;
      }
      case 'VOLUME': {
        const vols = { ...(out.Volumes ?? {}) };
        const list = arg.trim().startsWith('[') ? (JSON.parse(arg) as string[]) : arg.trim().split(/\s+/);
        for (const v of list) vols[v] = {};
        out.Volumes = vols;
        break;
      }
      default:
        // Docker's words, with the instruction as its parser keeps it (lower case).
        throw new BadRequestError(`${instr.toLowerCase()} is not a valid change command`);
    }
  }
  return out;
}
