/** Dockerfile parsing and variable expansion for the classic builder, as pure data. */
import { BadRequestError } from '../util/errors.js';

export interface Instruction {
  /** Upper-cased keyword: FROM, RUN, COPY… */
  cmd: string;
  /** The text after the keyword, continuation lines joined. */
  rest: string;
  /** `--name=value` flags (COPY --from, --chown; FROM --platform). */
  flags: Record<string, string>;
  /** Exec form (JSON array) arguments, when the instruction used it. */
  json?: string[];
  line: number;
  /** As Docker prints it in "Step N/M : …". */
  original: string;
  /** An ONBUILD trigger of the base image, run as part of FROM. */
  trigger?: boolean;
}

const KNOWN = new Set(['FROM', 'RUN', 'CMD', 'ENTRYPOINT', 'COPY', 'ADD', 'ENV', 'ARG', 'WORKDIR', 'LABEL', 'EXPOSE', 'USER', 'VOLUME', 'STOPSIGNAL', 'MAINTAINER', 'SHELL', 'HEALTHCHECK', 'ONBUILD']);

export class DockerfileError extends BadRequestError {}

/** Splits a Dockerfile into instructions (comments, blank lines and `\` continuations handled). */
export function parseDockerfile(text: string, needFrom = true): Instruction[] {
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  const out: Instruction[] = [];
  let i = 0;
  while (i < lines.length) {
    const startLine = i + 1;
    let line = lines[i]!;
    i++;
    if (/^\s*#/.test(line) || line.trim() === '') continue;
    // A continuation joins the next lines; comment lines inside it are dropped, as Docker does.
    while (/\\\s*$/.test(line) && i < lines.length) {
      line = line.replace(/\\\s*$/, '');
      const next = lines[i]!;
      i++;
      if (/^\s*#/.test(next)) { line += '\\'; continue; }
      line += next;
    }
    line = line.replace(/\\\s*$/, '');
    const m = /^\s*(\S+)\s*(.*)$/s.exec(line)!;
    const cmd = m[1]!.toUpperCase();
    if (!KNOWN.has(cmd)) throw new DockerfileError(`dockerfile parse error line ${startLine}: unknown instruction: ${m[1]}`);
    let rest = m[2]!.trim();
    const flags: Record<string, string> = {};
    if (['COPY', 'ADD', 'FROM', 'RUN', 'HEALTHCHECK'].includes(cmd)) {
      let f: RegExpExecArray | null;
      while ((f = /^--([a-z-]+)(?:=(\S*))?\s*/.exec(rest))) {
        flags[f[1]!] = f[2] ?? 'true';
        rest = rest.slice(f[0].length);
      }
    }
    let json: string[] | undefined;
    if (rest.startsWith('[') && ['RUN', 'CMD', 'ENTRYPOINT', 'COPY', 'ADD', 'VOLUME', 'SHELL'].includes(cmd)) {
      try {
        const v = JSON.parse(rest) as unknown;
        if (Array.isArray(v) && v.every((x) => typeof x === 'string')) json = v;
      } catch { /* shell form that happens to start with [ */ }
    }
    if (rest === '' && !['CMD', 'ENTRYPOINT', 'HEALTHCHECK'].includes(cmd)) {
      throw new DockerfileError(`dockerfile parse error line ${startLine}: ${cmd} requires at least one argument`);
    }
    out.push({ cmd, rest, flags, ...(json ? { json } : {}), line: startLine, original: `${m[1]} ${m[2]!.trim()}`.trim() });
  }
  if (needFrom && !out.some((x) => x.cmd === 'FROM')) throw new DockerfileError('dockerfile parse error: no FROM instruction');
  return out;
}

/** Expands $VAR, ${VAR}, ${VAR:-default} and ${VAR:+alt}; `\$` stays a literal dollar. */
export function expand(s: string, vars: Record<string, string>): string {
  let out = '';
  let quote: string | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && s[i + 1] === '$') { out += '$'; i++; continue; }
    if (c === "'" && quote === undefined) { quote = "'"; out += c; continue; }
    if (c === "'" && quote === "'") { quote = undefined; out += c; continue; }
    if (c !== '$' || quote === "'") { out += c; continue; }
    const braced = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}/.exec(s.slice(i));
    if (braced) {
      const v = vars[braced[1]!];
      if (braced[2] === '-') out += v !== undefined && v !== '' ? v : expand(braced[3]!, vars);
      else if (braced[2] === '+') out += v !== undefined && v !== '' ? expand(braced[3]!, vars) : '';
      else out += v ?? '';
      i += braced[0].length - 1;
      continue;
    }
    const plain = /^\$([A-Za-z_][A-Za-z0-9_]*)/.exec(s.slice(i));
    if (plain) { out += vars[plain[1]!] ?? ''; i += plain[0].length - 1; continue; }
    out += c;
  }
  return out;
}

/** Splits `a=b "c d"=e` or `KEY value with spaces` (the legacy one-pair form) into pairs. */
export function parsePairs(rest: string, line: number, cmd: string): Array<[string, string]> {
  const words = splitWords(rest);
  if (words.length && !words[0]!.includes('=')) {
    // Legacy `ENV KEY value…`: everything after the key is the value.
    const key = words[0]!;
    const value = rest.trim().slice(rest.trim().indexOf(key) + key.length).trim();
    if (cmd === 'LABEL' || value === '') throw new DockerfileError(`dockerfile parse error line ${line}: ${cmd} names can not be blank or must have a value`);
    return [[key, unquote(value)]];
  }
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq <= 0) throw new DockerfileError(`dockerfile parse error line ${line}: ${cmd} expects KEY=VALUE, got ${w}`);
    return [unquote(w.slice(0, eq)), unquote(w.slice(eq + 1))];
  });
}

/** Words separated by blanks, quotes kept (so values can be unquoted after splitting on "="). */
export function splitWords(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | undefined;
  let any = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quote) {
      if (c === '\\' && quote === '"' && i + 1 < s.length) { cur += c + s[++i]; continue; }
      if (c === quote) quote = undefined;
      cur += c;
      continue;
    }
    if (c === '"' || c === "'") { quote = c; cur += c; any = true; continue; }
    if (c === '\\' && i + 1 < s.length) { cur += c + s[++i]; continue; }
    if (/\s/.test(c)) { if (any || cur) out.push(cur); cur = ''; any = false; continue; }
    cur += c;
  }
  if (any || cur) out.push(cur);
  return out;
}

function unquote(s: string): string {
  let out = '';
  let quote: string | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quote) {
      if (c === quote) { quote = undefined; continue; }
      if (c === '\\' && quote === '"' && i + 1 < s.length) { out += s[++i]; continue; }
      out += c;
      continue;
    }
    if (c === '"' || c === "'") { quote = c; continue; }
    if (c === '\\' && i + 1 < s.length) { out += s[++i]; continue; }
    out += c;
  }
  return out;
}

/** A Go duration ("30s", "1m30s", "500ms") in nanoseconds, as HEALTHCHECK's options take it. */
export function parseDuration(s: string): number {
  const units: Record<string, number> = { ns: 1, us: 1e3, 'µs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  if (!/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(s)) throw new DockerfileError(`invalid duration ${s}`);
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) total += Number(m[1]) * units[m[2]!]!;
  return Math.round(total);
}
