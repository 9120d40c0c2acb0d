/**
 * A subset of Go's text/template, enough for docker's `--format` and `inspect -f`.
 *
 * Supported: text and actions with `{{-`/`-}}` trimming and comments; fields `.A.B`, `.`,
 * variables `$`, `$x.A`; string, raw-string, char, number, bool and nil literals; function calls and
 * pipelines `a | b`; parenthesised pipelines `(index .M "k").Field`; `if`/`else if`/`else`,
 * `range` (with `$v :=` or `$k, $v :=`), `with`, `{{$x := …}}`/`{{$x = …}}`, `break`/`continue`.
 * Functions: Go's builtins (and or not len index slice print printf println eq ne lt le gt ge
 * urlquery) and docker's (json split join title lower upper pad truncate).
 *
 * Values are JSON-ish: plain objects behave like Go maps (sorted iteration, `map[k:v]` printing,
 * `<no value>` for missing keys), `Struct` instances behave like docker's formatter contexts (a
 * missing field is an error, methods may take arguments).
 */

export class TemplateError extends Error {
  override name = 'TemplateError';
}

/** A value that behaves like a Go struct: fixed fields, some of them methods. */
export class Struct {
  constructor(readonly typeName: string, readonly fields: Record<string, unknown>) {}

  /** docker's formatter contexts marshal every argument-less method, with sorted keys. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(this.fields).sort()) {
      const v = this.fields[k];
      if (typeof v === 'function') {
        if (v.length === 0) out[k] = (v as () => unknown)();
      } else {
        out[k] = v;
      }
    }
    return out;
  }
}

export type TemplateFunc = (...args: unknown[]) => unknown;
export type FuncMap = Record<string, TemplateFunc>;

// ---------------------------------------------------------------------------------------------
// Lexing

type TokKind = 'field' | 'var' | 'dot' | 'chain' | 'string' | 'number' | 'bool' | 'nil' | 'ident'
  | 'pipe' | 'lparen' | 'rparen' | 'declare' | 'assign' | 'comma' | 'space';

interface Tok { kind: TokKind; text: string; pos: number; names?: string[]; value?: unknown }

type Item =
  | { kind: 'text'; text: string }
  | { kind: 'action'; toks: Tok[]; pos: number }
  | { kind: 'comment' };

const KEYWORDS = new Set(['if', 'else', 'end', 'range', 'with', 'define', 'template', 'block', 'break', 'continue']);

function isSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\r';
}

function isIdentChar(c: string | undefined): boolean {
  return c !== undefined && /[\p{L}\p{N}_]/u.test(c);
}

class Lexer {
  private pos = 0;
  readonly items: Item[] = [];

  constructor(private readonly src: string, private readonly name: string) {}

  lineCol(pos: number): string {
    const before = this.src.slice(0, pos);
    const line = before.split('\n').length;
    const col = pos - (before.lastIndexOf('\n') + 1);
    return `${line}:${col}`;
  }

  fail(pos: number, msg: string): never {
    const line = this.src.slice(0, pos).split('\n').length;
    throw new TemplateError(`template: ${this.name}:${line}: ${msg}`);
  }

  run(): Item[] {
    const src = this.src;
    let trimNext = false;
    while (this.pos < src.length) {
      const open = src.indexOf('{{', this.pos);
      let text = open < 0 ? src.slice(this.pos) : src.slice(this.pos, open);
      if (trimNext) text = text.replace(/^[ \t\r\n]+/, '');
      trimNext = false;
      if (open < 0) {
        if (text) this.items.push({ kind: 'text', text });
        break;
      }
      let p = open + 2;
      if (src[p] === '-' && isSpace(src[p + 1])) {
        text = text.replace(/[ \t\r\n]+$/, '');
        p += 2;
      }
      if (text) this.items.push({ kind: 'text', text });
      // Comments: {{/* ... */}}, possibly with trim markers.
      let q = p;
      while (isSpace(src[q])) q++;
      if (src.startsWith('/*', q)) {
        const end = src.indexOf('*/', q + 2);
        if (end < 0) this.fail(q, 'unclosed comment');
        let r = end + 2;
        if (src.startsWith(' -}}', r) || src.startsWith('\t-}}', r) || src.startsWith('\n-}}', r)) {
          trimNext = true;
          r += 4;
        } else if (src.startsWith('}}', r)) {
          r += 2;
        } else {
          this.fail(r, 'comment ends before closing delimiter');
        }
        this.items.push({ kind: 'comment' });
        this.pos = r;
        continue;
      }
      const { toks, end, trim } = this.lexAction(p);
      this.items.push({ kind: 'action', toks, pos: p });
      trimNext = trim;
      this.pos = end;
    }
    return this.items;
  }

  private lexAction(start: number): { toks: Tok[]; end: number; trim: boolean } {
    const src = this.src;
    const toks: Tok[] = [];
    let p = start;
    const push = (kind: TokKind, text: string, pos: number, extra: Partial<Tok> = {}) => toks.push({ kind, text, pos, ...extra });
    for (;;) {
      if (p >= src.length) this.fail(start, 'unclosed action');
      const c = src[p]!;
      if (isSpace(c)) {
        let q = p;
        while (isSpace(src[q])) q++;
        if (src.startsWith('-}}', q)) return { toks, end: q + 3, trim: true };
        push('space', ' ', p);
        p = q;
        continue;
      }
      if (src.startsWith('}}', p)) return { toks, end: p + 2, trim: false };
      if (c === '|') { push('pipe', c, p); p++; continue; }
      if (c === '(') { push('lparen', c, p); p++; continue; }
      if (c === ')') {
        push('rparen', c, p);
        p++;
        if (src[p] === '.' && isIdentChar(src[p + 1])) {
          const { names, end } = this.fieldNames(p);
          push('chain', src.slice(p, end), p, { names });
          p = end;
        }
        continue;
      }
      if (c === ',') { push('comma', c, p); p++; continue; }
      if (src.startsWith(':=', p)) { push('declare', ':=', p); p += 2; continue; }
      if (c === '=') { push('assign', '=', p); p++; continue; }
      if (c === '"') {
        let q = p + 1;
        while (q < src.length && src[q] !== '"') {
          if (src[q] === '\\') q++;
          if (src[q] === '\n') this.fail(p, 'unterminated quoted string');
          q++;
        }
        if (q >= src.length) this.fail(p, 'unterminated quoted string');
        const raw = src.slice(p, q + 1);
        push('string', raw, p, { value: unquoteGo(raw, () => this.fail(p, `invalid syntax: ${raw}`)) });
        p = q + 1;
        continue;
      }
      if (c === '`') {
        const q = src.indexOf('`', p + 1);
        if (q < 0) this.fail(p, 'unterminated raw quoted string');
        push('string', src.slice(p, q + 1), p, { value: src.slice(p + 1, q) });
        p = q + 1;
        continue;
      }
      if (c === "'") {
        const m = /^'(\\.|[^\\'])'/u.exec(src.slice(p));
        if (!m) this.fail(p, 'unterminated character constant');
        const ch = unquoteGo(`"${m[1]}"`, () => this.fail(p, 'invalid character constant'));
        push('number', m[0], p, { value: ch.codePointAt(0) });
        p += m[0].length;
        continue;
      }
      if (c === '.') {
        if (isIdentChar(src[p + 1]) && !/[0-9]/.test(src[p + 1]!)) {
          const { names, end } = this.fieldNames(p);
          push('field', src.slice(p, end), p, { names });
          p = end;
        } else if (/[0-9]/.test(src[p + 1] ?? '')) {
          p = this.number(p, push);
        } else {
          push('dot', '.', p);
          p++;
        }
        continue;
      }
      if (c === '$') {
        let q = p + 1;
        while (isIdentChar(src[q])) q++;
        const name = src.slice(p, q);
        let names: string[] = [];
        if (src[q] === '.' && isIdentChar(src[q + 1])) {
          const f = this.fieldNames(q);
          names = f.names;
          q = f.end;
        }
        push('var', src.slice(p, q), p, { names: [name, ...names] });
        p = q;
        continue;
      }
      if (/[0-9+-]/.test(c)) {
        p = this.number(p, push);
        continue;
      }
      if (isIdentChar(c)) {
        let q = p;
        while (isIdentChar(src[q])) q++;
        const word = src.slice(p, q);
        if (word === 'true' || word === 'false') push('bool', word, p, { value: word === 'true' });
        else if (word === 'nil') push('nil', word, p);
        else push('ident', word, p);
        p = q;
        continue;
      }
      this.fail(p, `unexpected "${c}" in command`);
    }
  }

  private fieldNames(p: number): { names: string[]; end: number } {
    const names: string[] = [];
    let q = p;
    while (this.src[q] === '.' && isIdentChar(this.src[q + 1])) {
      let r = q + 1;
      while (isIdentChar(this.src[r])) r++;
      names.push(this.src.slice(q + 1, r));
      q = r;
    }
    return { names, end: q };
  }

  private number(p: number, push: (kind: TokKind, text: string, pos: number, extra?: Partial<Tok>) => void): number {
    const m = /^[+-]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(\d[\d_]*)?\.?\d*([eE][+-]?\d+)?)/.exec(this.src.slice(p));
    const text = m?.[0] ?? '';
    if (!text || text === '+' || text === '-' || text === '.') this.fail(p, `bad number syntax: "${this.src.slice(p, p + 1)}"`);
    const clean = text.replace(/_/g, '');
    const sign = clean.startsWith('-') ? -1 : 1;
    const body = clean.replace(/^[+-]/, '');
    let value: number;
    if (/^0[xX]/.test(body)) value = parseInt(body.slice(2), 16);
    else if (/^0[oO]/.test(body)) value = parseInt(body.slice(2), 8);
    else if (/^0[bB]/.test(body)) value = parseInt(body.slice(2), 2);
    else value = Number(body);
    if (Number.isNaN(value)) this.fail(p, `bad number syntax: "${text}"`);
    push('number', text, p, { value: sign * value });
    return p + text.length;
  }
}

function unquoteGo(raw: string, fail: () => never): string {
  const body = raw.slice(1, -1);
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c !== '\\') { out += c; continue; }
    const n = body[++i];
    switch (n) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '"': out += '"'; break;
      case "'": out += "'"; break;
      case 'a': out += '\x07'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case 'x': out += String.fromCharCode(parseInt(body.slice(i + 1, i + 3), 16)); i += 2; break;
      case 'u': out += String.fromCodePoint(parseInt(body.slice(i + 1, i + 5), 16)); i += 4; break;
      case 'U': out += String.fromCodePoint(parseInt(body.slice(i + 1, i + 9), 16)); i += 8; break;
      default:
        if (n !== undefined && /[0-7]/.test(n)) {
          out += String.fromCharCode(parseInt(body.slice(i, i + 3), 8));
          i += 2;
        } else {
          fail();
        }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Parsing

type Arg =
  | { kind: 'field'; names: string[]; pos: number; text: string }
  | { kind: 'var'; name: string; names: string[]; pos: number; text: string }
  | { kind: 'dot'; pos: number; text: string }
  | { kind: 'literal'; value: unknown; pos: number; text: string }
  | { kind: 'func'; name: string; pos: number; text: string }
  | { kind: 'sub'; pipe: Pipeline; names: string[]; pos: number; text: string };

interface Command { args: Arg[]; pos: number }
interface Pipeline { decl: string[]; assign: boolean; cmds: Command[]; pos: number }

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'action'; pipe: Pipeline }
  | { kind: 'if' | 'with'; pipe: Pipeline; list: Node[]; elseList: Node[] | undefined }
  | { kind: 'range'; pipe: Pipeline; list: Node[]; elseList: Node[] | undefined }
  | { kind: 'break' | 'continue'; pos: number };

const BUILTIN_NAMES = ['and', 'or', 'not', 'len', 'index', 'slice', 'print', 'printf', 'println', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'urlquery', 'html', 'js', 'call'];

class Parser {
  private i = 0;
  private rangeDepth = 0;

  constructor(private readonly items: Item[], private readonly lexer: Lexer, private readonly funcs: FuncMap) {}

  parse(): Node[] {
    const { list, stop } = this.list();
    if (stop) this.lexer.fail(stop.pos, `unexpected {{${stop.toks.map((t) => t.text).join('')}}}`);
    return list;
  }

  /** Parses until {{end}} or {{else…}}; returns the list and the action that stopped it. */
  private list(): { list: Node[]; stop?: { kind: 'action'; toks: Tok[]; pos: number } } {
    const list: Node[] = [];
    while (this.i < this.items.length) {
      const item = this.items[this.i++]!;
      if (item.kind === 'text') { list.push({ kind: 'text', text: item.text }); continue; }
      if (item.kind === 'comment') continue;
      const toks = item.toks.filter((t, idx) => !(t.kind === 'space' && (idx === 0 || idx === item.toks.length - 1)));
      const first = toks[0];
      if (!first) this.lexer.fail(item.pos, 'missing value for command');
      if (first.kind === 'ident' && KEYWORDS.has(first.text)) {
        const rest = toks.slice(1).filter((t, idx) => !(idx === 0 && t.kind === 'space'));
        switch (first.text) {
          case 'end': case 'else':
            return { list, stop: item };
          case 'if': case 'with': case 'range':
            list.push(this.control(first.text, rest, item.pos));
            continue;
          case 'break': case 'continue':
            if (this.rangeDepth === 0) this.lexer.fail(item.pos, `{{${first.text}}} outside {{range}}`);
            list.push({ kind: first.text, pos: item.pos });
            continue;
          default:
            this.lexer.fail(item.pos, `{{${first.text}}} is not supported`);
        }
      }
      list.push({ kind: 'action', pipe: this.pipeline(toks, item.pos, true) });
    }
    return { list };
  }

  private control(kind: 'if' | 'with' | 'range', toks: Tok[], pos: number): Node {
    const pipe = this.pipeline(toks, pos, kind === 'range' || kind === 'with' || kind === 'if');
    if (kind === 'range') this.rangeDepth++;
    const body = this.list();
    if (kind === 'range') this.rangeDepth--;
    if (!body.stop) this.lexer.fail(pos, `unexpected EOF`);
    let elseList: Node[] | undefined;
    const stopToks = body.stop.toks.filter((t) => t.kind !== 'space' || true);
    const words = stopToks.filter((t) => t.kind !== 'space');
    if (words[0]!.text === 'else') {
      if (words.length > 1) {
        // `else if …` / `else with …`: an else branch holding one nested control node, which
        // consumes the shared {{end}}.
        const nestedKind = words[1]!.text;
        if (nestedKind !== 'if' && nestedKind !== 'with') this.lexer.fail(body.stop.pos, `unexpected ${words[1]!.text} in else`);
        const idx = stopToks.indexOf(words[1]!);
        const rest = stopToks.slice(idx + 1).filter((t, j) => !(j === 0 && t.kind === 'space'));
        const nested = this.control(nestedKind, rest, body.stop.pos);
        return { kind, pipe, list: body.list, elseList: [nested] } as Node;
      }
      const tail = this.list();
      if (!tail.stop) this.lexer.fail(pos, 'unexpected EOF');
      const tw = tail.stop.toks.filter((t) => t.kind !== 'space');
      if (tw[0]!.text !== 'end') this.lexer.fail(tail.stop.pos, 'expected end; found else');
      elseList = tail.list;
    }
    return { kind, pipe, list: body.list, elseList } as Node;
  }

  private pipeline(all: Tok[], pos: number, allowDecl: boolean): Pipeline {
    let toks = all;
    const decl: string[] = [];
    let assign = false;
    // Variable declaration: `$x :=`, `$k, $v :=`, or assignment `$x =`.
    const nonSpace = toks.filter((t) => t.kind !== 'space');
    const declIdx = nonSpace.findIndex((t) => t.kind === 'declare' || t.kind === 'assign');
    if (declIdx > 0 && nonSpace.slice(0, declIdx).every((t) => t.kind === 'var' || t.kind === 'comma')) {
      if (!allowDecl) this.lexer.fail(pos, 'unexpected declaration');
      for (const t of nonSpace.slice(0, declIdx)) if (t.kind === 'var') decl.push(t.names![0]!);
      assign = nonSpace[declIdx]!.kind === 'assign';
      toks = toks.slice(toks.indexOf(nonSpace[declIdx]!) + 1);
    }
    const { cmds, rest } = this.commands(toks, pos);
    if (rest.length) this.lexer.fail(rest[0]!.pos, `unexpected "${rest[0]!.text}" in operand`);
    if (cmds.length === 0) this.lexer.fail(pos, 'missing value for command');
    return { decl, assign, cmds, pos };
  }

  /** Commands separated by `|`, up to an unmatched `)`. */
  private commands(toks: Tok[], pos: number): { cmds: Command[]; rest: Tok[] } {
    const cmds: Command[] = [];
    let args: Arg[] = [];
    let cmdPos = pos;
    let i = 0;
    const endCmd = (at: number) => {
      if (args.length === 0) this.lexer.fail(at, 'missing value for command');
      cmds.push({ args, pos: cmdPos });
      args = [];
    };
    while (i < toks.length) {
      const t = toks[i]!;
      if (t.kind === 'space') { i++; continue; }
      if (t.kind === 'pipe') { endCmd(t.pos); i++; continue; }
      if (t.kind === 'rparen') break;
      if (args.length === 0) cmdPos = t.pos;
      if (t.kind === 'lparen') {
        // Find the matching parenthesis, then parse the inside as a pipeline.
        let depth = 0;
        let j = i;
        for (; j < toks.length; j++) {
          if (toks[j]!.kind === 'lparen') depth++;
          if (toks[j]!.kind === 'rparen' && --depth === 0) break;
        }
        if (j >= toks.length) this.lexer.fail(t.pos, 'unclosed left paren');
        const inner = this.pipeline(toks.slice(i + 1, j), t.pos, false);
        const chain = toks[j + 1]?.kind === 'chain' ? toks[j + 1]! : undefined;
        args.push({ kind: 'sub', pipe: inner, names: chain?.names ?? [], pos: t.pos, text: '(...)' });
        i = chain ? j + 2 : j + 1;
        continue;
      }
      args.push(this.operand(t));
      i++;
    }
    if (args.length) cmds.push({ args, pos: cmdPos });
    else if (cmds.length) this.lexer.fail(pos, 'missing value for command');
    return { cmds, rest: toks.slice(i) };
  }

  private operand(t: Tok): Arg {
    switch (t.kind) {
      case 'field': return { kind: 'field', names: t.names!, pos: t.pos, text: t.text };
      case 'var': return { kind: 'var', name: t.names![0]!, names: t.names!.slice(1), pos: t.pos, text: t.text };
      case 'dot': return { kind: 'dot', pos: t.pos, text: '.' };
      case 'string': case 'number': case 'bool': return { kind: 'literal', value: t.value, pos: t.pos, text: t.text };
      case 'nil': return { kind: 'literal', value: null, pos: t.pos, text: 'nil' };
      case 'ident':
        if (!(t.text in this.funcs) && !BUILTIN_NAMES.includes(t.text)) this.lexer.fail(t.pos, `function "${t.text}" not defined`);
        return { kind: 'func', name: t.text, pos: t.pos, text: t.text };
      default:
        this.lexer.fail(t.pos, `unexpected "${t.text}" in operand`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Values

/** Go's truth: false, 0, nil, and empty strings, arrays and maps are false. */
export function isTrue(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v !== 0;
  if (typeof v === 'string') return v.length > 0;
  if (Array.isArray(v)) return v.length > 0;
  if (v instanceof Struct) return true;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Struct);
}

/** What fmt's %v prints for a value. */
export function printValue(v: unknown): string {
  if (v === undefined) return '<no value>';
  if (v === null) return '<nil>';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return formatNumber(v);
  if (typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(printNested).join(' ')}]`;
  if (v instanceof Struct) return `{${Object.keys(v.fields).map((k) => printNested(fieldValue(v, k))).join(' ')}}`;
  if (typeof v === 'object') {
    const obj = v as Record<string, unknown>;
    return `map[${Object.keys(obj).sort().map((k) => `${k}:${printNested(obj[k])}`).join(' ')}]`;
  }
  return String(v);
}

function printNested(v: unknown): string {
  return v === undefined ? '<nil>' : printValue(v);
}

function formatNumber(n: number): string {
  if (Number.isInteger(n) && Math.abs(n) < 1e21) return String(n);
  return String(n).replace(/e([+-])(\d)$/, 'e$10$2');
}

function fieldValue(s: Struct, name: string): unknown {
  const f = s.fields[name];
  return typeof f === 'function' ? (f.length === 0 ? (f as () => unknown)() : undefined) : f;
}

function goTypeName(v: unknown): string {
  if (v === null || v === undefined) return 'interface {}';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float64';
  if (typeof v === 'boolean') return 'bool';
  if (Array.isArray(v)) return '[]interface {}';
  if (v instanceof Struct) return v.typeName;
  return 'map[string]interface {}';
}

/**
 * A missing key of a map: Go gives the element type's zero value. Maps whose values are all
 * strings (labels, options) are map[string]string in docker's types, so "" rather than <no value>.
 */
function missingKey(obj: Record<string, unknown>): unknown {
  return Object.values(obj).every((x) => typeof x === 'string') ? '' : undefined;
}

/**
 * Go's json.Marshal as docker's `json` function uses it: data decoded from the API is a map, so
 * keys come out sorted, and <, > and & are escaped for HTML.
 */
function toJSONText(v: unknown): string {
  const sorted = (_key: string, value: unknown): unknown => {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || Object.getPrototypeOf(value) !== Object.prototype) return value;
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, (value as Record<string, unknown>)[k]]));
  };
  const text = JSON.stringify(v === undefined ? null : v, sorted);
  if (text === undefined) return 'null';
  return text.replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// ---------------------------------------------------------------------------------------------
// printf

function fmtSprintf(format: string, args: unknown[]): string {
  let out = '';
  let argi = 0;
  for (let i = 0; i < format.length; i++) {
    const c = format[i]!;
    if (c !== '%') { out += c; continue; }
    const m = /^([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])/.exec(format.slice(i + 1));
    if (!m) { out += '%!(NOVERB)'; break; }
    i += m[0].length;
    const flags = m[1] ?? '';
    let width = m[2] === '*' ? Number(args[argi++]) : m[2] !== undefined ? Number(m[2]) : undefined;
    let prec = m[3] === '*' ? Number(args[argi++]) : m[3] !== undefined ? Number(m[3]) : (format.slice(i - m[0].length + 1).includes('.') && /\.(?=[a-zA-Z%])/.test(m[0]) ? 0 : undefined);
    const verb = m[4]!;
    if (verb === '%') { out += '%'; continue; }
    if (argi >= args.length) { out += `%!${verb}(MISSING)`; continue; }
    const a = args[argi++];
    let s: string;
    switch (verb) {
      case 'v': s = flags.includes('+') && isPlainObject(a) ? printValue(a) : printValue(a); break;
      case 's': s = printValue(a); if (prec !== undefined) s = [...s].slice(0, prec).join(''); break;
      case 'q': s = typeof a === 'number' ? `'${String.fromCodePoint(a)}'` : JSON.stringify(printValue(a)); break;
      case 'd':
        s = typeof a === 'number' ? String(Math.trunc(a)) : `%!d(${goTypeName(a)}=${printValue(a)})`;
        if (flags.includes('+') && typeof a === 'number' && a >= 0) s = `+${s}`;
        break;
      case 't': s = typeof a === 'boolean' ? String(a) : `%!t(${goTypeName(a)}=${printValue(a)})`; break;
      case 'f': case 'F': s = typeof a === 'number' ? a.toFixed(prec ?? 6) : `%!f(${goTypeName(a)}=${printValue(a)})`; break;
      case 'e': s = typeof a === 'number' ? a.toExponential(prec ?? 6).replace(/e([+-])(\d)$/, 'e$10$2') : `%!e(${goTypeName(a)})`; break;
      case 'g': s = typeof a === 'number' ? (prec !== undefined ? formatG(a, prec) : formatNumber(a)) : `%!g(${goTypeName(a)})`; break;
      case 'x': case 'X': {
        const hex = typeof a === 'number' ? Math.trunc(a).toString(16) : Buffer.from(printValue(a)).toString('hex');
        s = verb === 'X' ? hex.toUpperCase() : hex;
        break;
      }
      case 'c': s = typeof a === 'number' ? String.fromCodePoint(a) : `%!c(${goTypeName(a)})`; break;
      case 'T': s = goTypeName(a); break;
      default: s = `%!${verb}(${goTypeName(a)}=${printValue(a)})`;
    }
    if (width !== undefined && [...s].length < width) {
      const pad = width - [...s].length;
      if (flags.includes('-')) s += ' '.repeat(pad);
      else if (flags.includes('0') && /[dfFeEgxX]/.test(verb)) s = s.startsWith('-') ? `-${'0'.repeat(pad)}${s.slice(1)}` : '0'.repeat(pad) + s;
      else s = ' '.repeat(pad) + s;
    }
    prec = undefined;
    width = undefined;
    out += s;
  }
  if (argi < args.length) out += `%!(EXTRA ${args.slice(argi).map((a) => `${goTypeName(a)}=${printValue(a)}`).join(', ')})`;
  return out;
}

/** Go's %.<prec>g: shortest of %e and %f for the given significant digits, trailing zeros removed. */
export function formatG(x: number, prec: number): string {
  if (x === 0) return '0';
  if (!Number.isFinite(x)) return x > 0 ? '+Inf' : Number.isNaN(x) ? 'NaN' : '-Inf';
  const p = prec === 0 ? 1 : prec;
  const [mant, expText] = x.toExponential(p - 1).split('e') as [string, string];
  const exp = Number(expText);
  const strip = (s: string) => (s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s);
  if (exp < -4 || exp >= p) {
    return `${strip(mant)}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  return strip(x.toFixed(Math.max(0, p - 1 - exp)));
}

// ---------------------------------------------------------------------------------------------
// Functions

function compareValues(a: unknown, b: unknown, op: string): boolean {
  const basic = (v: unknown) => v === null || v === undefined || ['string', 'number', 'boolean'].includes(typeof v);
  if (op === 'eq' || op === 'ne') {
    if (!basic(a) || !basic(b)) throw new TemplateError(`error calling ${op}: incompatible types for comparison`);
    if (a !== null && b !== null && a !== undefined && b !== undefined && typeof a !== typeof b) {
      throw new TemplateError(`error calling ${op}: incompatible types for comparison`);
    }
    return a === b;
  }
  if (typeof a !== typeof b || !(typeof a === 'number' || typeof a === 'string')) {
    throw new TemplateError(`error calling ${op}: incompatible types for comparison`);
  }
  const x = a as number | string;
  const y = b as number | string;
  switch (op) {
    case 'lt': return x < y;
    case 'le': return x <= y;
    case 'gt': return x > y;
    default: return x >= y;
  }
}

function goLen(v: unknown): number {
  if (typeof v === 'string') return Buffer.byteLength(v);
  if (Array.isArray(v)) return v.length;
  if (isPlainObject(v)) return Object.keys(v).length;
  throw new TemplateError(`error calling len: len of type ${goTypeName(v)}`);
}

function goIndex(v: unknown, ...keys: unknown[]): unknown {
  let cur = v;
  for (const k of keys) {
    if (Array.isArray(cur) || typeof cur === 'string') {
      if (typeof k !== 'number') throw new TemplateError(`error calling index: cannot index slice/array with type ${goTypeName(k)}`);
      if (k < 0 || k >= cur.length) throw new TemplateError(`error calling index: index out of range: ${k}`);
      cur = typeof cur === 'string' ? cur.charCodeAt(k) : cur[k];
    } else if (isPlainObject(cur)) {
      const key = printValue(k);
      cur = Object.prototype.hasOwnProperty.call(cur, key) ? cur[key] : missingKey(cur);
    } else if (cur === null || cur === undefined) {
      throw new TemplateError('error calling index: index of untyped nil');
    } else {
      throw new TemplateError(`error calling index: can't index item of type ${goTypeName(cur)}`);
    }
  }
  return cur;
}

/** fmt.Sprint: spaces between operands when neither side is a string. */
function goSprint(args: unknown[]): string {
  let out = '';
  args.forEach((a, i) => {
    if (i > 0 && typeof a !== 'string' && typeof args[i - 1] !== 'string') out += ' ';
    out += printValue(a);
  });
  return out;
}

function goTitle(s: string): string {
  return s.replace(/(^|[^\p{L}\p{N}_'])(\p{L})/gu, (_m, pre: string, ch: string) => pre + ch.toUpperCase());
}

const BUILTINS: FuncMap = {
  and: (...a) => { for (const x of a) if (!isTrue(x)) return x; return a[a.length - 1]; },
  or: (...a) => { for (const x of a) if (isTrue(x)) return x; return a[a.length - 1]; },
  not: (a) => !isTrue(a),
  len: (a) => goLen(a),
  index: (v, ...k) => goIndex(v, ...k),
  slice: (v, ...idx) => {
    if (typeof v !== 'string' && !Array.isArray(v)) throw new TemplateError(`error calling slice: can't slice item of type ${goTypeName(v)}`);
    const [i = 0, j = v.length] = idx as number[];
    return v.slice(i, j);
  },
  print: (...a) => goSprint(a),
  println: (...a) => `${a.map(printValue).join(' ')}\n`,
  printf: (f, ...a) => fmtSprintf(String(f), a),
  urlquery: (...a) => encodeURIComponent(goSprint(a)).replace(/%20/g, '+'),
  html: (...a) => goSprint(a).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&#34;').replace(/'/g, '&#39;'),
  js: (...a) => JSON.stringify(goSprint(a)).slice(1, -1),
  call: (fn, ...a) => {
    if (typeof fn !== 'function') throw new TemplateError(`error calling call: non-function of type ${goTypeName(fn)}`);
    return (fn as TemplateFunc)(...a);
  },
  eq: (a, ...b) => {
    if (b.length === 0) throw new TemplateError('error calling eq: missing argument for comparison');
    return b.some((x) => compareValues(a, x, 'eq'));
  },
  ne: (a, b) => !compareValues(a, b, 'ne'),
  lt: (a, b) => compareValues(a, b, 'lt'),
  le: (a, b) => compareValues(a, b, 'le'),
  gt: (a, b) => compareValues(a, b, 'gt'),
  ge: (a, b) => compareValues(a, b, 'ge'),
};

function str(v: unknown, fn: string): string {
  if (typeof v === 'string') return v;
  throw new TemplateError(`error calling ${fn}: wrong type for value; expected string; got ${goTypeName(v)}`);
}

/** docker's template functions (templates.basicFunctions). */
export const DOCKER_FUNCS: FuncMap = {
  json: (v) => toJSONText(v),
  split: (s, sep) => { const t = str(s, 'split'); const p = str(sep, 'split'); return p === '' ? [...t] : t.split(p); },
  join: (list, sep) => {
    if (!Array.isArray(list)) throw new TemplateError(`error calling join: wrong type for value; expected []string; got ${goTypeName(list)}`);
    return list.map(printValue).join(str(sep, 'join'));
  },
  title: (s) => goTitle(str(s, 'title')),
  lower: (s) => str(s, 'lower').toLowerCase(),
  upper: (s) => str(s, 'upper').toUpperCase(),
  pad: (s, before, after) => ' '.repeat(Number(before)) + str(s, 'pad') + ' '.repeat(Number(after)),
  truncate: (s, n) => { const r = [...str(s, 'truncate')]; return r.length > Number(n) ? r.slice(0, Number(n)).join('') : r.join(''); },
};

/** For the header row of `table` formats docker replaces these functions by the identity. */
export const HEADER_FUNCS: FuncMap = Object.fromEntries(
  ['json', 'split', 'join', 'title', 'lower', 'upper', 'pad', 'truncate'].map((n) => [n, (v: unknown) => v]),
);

// ---------------------------------------------------------------------------------------------
// Execution

const BREAK = Symbol('break');
const CONTINUE = Symbol('continue');
const NO_ARG = Symbol('no-arg');

interface Scope { vars: Array<[string, unknown]> }

class Exec {
  out = '';

  constructor(private readonly lexer: Lexer, private readonly funcs: FuncMap) {}

  fail(pos: number, at: string, msg: string): never {
    throw new TemplateError(`template: ${this.lexerName()}:${this.lexer.lineCol(pos)}: executing "${this.lexerName()}" at <${at}>: ${msg}`);
  }

  private lexerName(): string {
    return (this.lexer as unknown as { name: string }).name;
  }

  walk(nodes: Node[], dot: unknown, scope: Scope): void {
    for (const n of nodes) {
      switch (n.kind) {
        case 'text': this.out += n.text; break;
        case 'action': {
          const v = this.pipeline(n.pipe, dot, scope);
          if (n.pipe.decl.length === 0) this.out += printValue(v);
          break;
        }
        case 'if': case 'with': {
          const mark = scope.vars.length;
          const v = this.pipeline(n.pipe, dot, scope);
          if (isTrue(v)) this.walk(n.list, n.kind === 'with' ? v : dot, scope);
          else if (n.elseList) this.walk(n.elseList, dot, scope);
          scope.vars.length = mark;
          break;
        }
        case 'range': this.range(n, dot, scope); break;
        case 'break': throw BREAK;
        case 'continue': throw CONTINUE;
      }
    }
  }

  private range(n: Extract<Node, { kind: 'range' }>, dot: unknown, scope: Scope): void {
    const mark = scope.vars.length;
    const pipe = { ...n.pipe, decl: [] };
    const v = this.pipeline(pipe, dot, scope);
    let entries: Array<[unknown, unknown]>;
    if (Array.isArray(v)) entries = v.map((x, i) => [i, x]);
    else if (isPlainObject(v)) entries = Object.keys(v).sort().map((k) => [k, v[k]]);
    else if (typeof v === 'number' && Number.isInteger(v)) entries = Array.from({ length: Math.max(0, v) }, (_x, i) => [i, i]);
    else if (v === null || v === undefined) entries = [];
    else this.fail(n.pipe.pos, 'range', `range can't iterate over ${printValue(v)}`);
    if (entries.length === 0) {
      if (n.elseList) this.walk(n.elseList, dot, scope);
      scope.vars.length = mark;
      return;
    }
    for (const [k, x] of entries) {
      const inner = scope.vars.length;
      if (n.pipe.decl.length === 1) scope.vars.push([n.pipe.decl[0]!, x]);
      if (n.pipe.decl.length === 2) scope.vars.push([n.pipe.decl[0]!, k], [n.pipe.decl[1]!, x]);
      try {
        this.walk(n.list, x, scope);
      } catch (e) {
        if (e === BREAK) { scope.vars.length = inner; break; }
        if (e !== CONTINUE) throw e;
      }
      scope.vars.length = inner;
    }
    scope.vars.length = mark;
  }

  private lookupVar(scope: Scope, name: string, pos: number): unknown {
    for (let i = scope.vars.length - 1; i >= 0; i--) if (scope.vars[i]![0] === name) return scope.vars[i]![1];
    this.fail(pos, name, `undefined variable: ${name}`);
  }

  pipeline(p: Pipeline, dot: unknown, scope: Scope): unknown {
    let v: unknown = NO_ARG;
    for (const cmd of p.cmds) v = this.command(cmd, dot, scope, v);
    if (p.decl.length) {
      if (p.assign) {
        const name = p.decl[0]!;
        for (let i = scope.vars.length - 1; i >= 0; i--) {
          if (scope.vars[i]![0] === name) { scope.vars[i]![1] = v; return v; }
        }
        this.fail(p.pos, name, `undefined variable: ${name}`);
      }
      scope.vars.push([p.decl[p.decl.length - 1]!, v]);
    }
    return v;
  }

  private command(cmd: Command, dot: unknown, scope: Scope, final: unknown): unknown {
    const [first, ...rest] = cmd.args;
    const args = () => {
      const a = rest.map((x) => this.arg(x, dot, scope));
      if (final !== NO_ARG) a.push(final);
      return a;
    };
    if (first!.kind === 'func') {
      const fn = this.funcs[first!.name] ?? BUILTINS[first!.name];
      if (!fn) this.fail(first!.pos, first!.name, `function "${first!.name}" not defined`);
      try {
        return fn(...args());
      } catch (e) {
        if (e instanceof TemplateError && !e.message.startsWith('template:')) this.fail(first!.pos, first!.text, e.message);
        throw e;
      }
    }
    const hasArgs = rest.length > 0 || final !== NO_ARG;
    switch (first!.kind) {
      case 'field':
        return this.fields(dot, first!.names, first!.pos, first!.text, hasArgs ? args() : undefined);
      case 'var': {
        const base = this.lookupVar(scope, first!.name, first!.pos);
        if (first!.names.length === 0) {
          if (hasArgs) this.fail(first!.pos, first!.text, `can't give argument to non-function ${first!.text}`);
          return base;
        }
        return this.fields(base, first!.names, first!.pos, first!.text, hasArgs ? args() : undefined);
      }
      case 'sub': {
        const base = this.pipeline(first!.pipe, dot, scope);
        if (first!.names.length === 0) {
          if (hasArgs) this.fail(first!.pos, first!.text, `can't give argument to non-function ${first!.text}`);
          return base;
        }
        return this.fields(base, first!.names, first!.pos, first!.text, hasArgs ? args() : undefined);
      }
      default:
        if (hasArgs) this.fail(first!.pos, first!.text, `can't give argument to non-function ${first!.text}`);
        return this.arg(first!, dot, scope);
    }
  }

  private arg(a: Arg, dot: unknown, scope: Scope): unknown {
    switch (a.kind) {
      case 'dot': return dot;
      case 'literal': return a.value;
      case 'field': return this.fields(dot, a.names, a.pos, a.text, undefined);
      case 'var': {
        const base = this.lookupVar(scope, a.name, a.pos);
        return a.names.length ? this.fields(base, a.names, a.pos, a.text, undefined) : base;
      }
      case 'sub': {
        const base = this.pipeline(a.pipe, dot, scope);
        return a.names.length ? this.fields(base, a.names, a.pos, a.text, undefined) : base;
      }
      case 'func': {
        const fn = this.funcs[a.name] ?? BUILTINS[a.name]!;
        return fn();
      }
    }
  }

  private fields(receiver: unknown, names: string[], pos: number, text: string, args: unknown[] | undefined): unknown {
    let cur = receiver;
    names.forEach((name, i) => {
      const last = i === names.length - 1;
      const callArgs = last ? args : undefined;
      if (cur === undefined || cur === null) this.fail(pos, text, `nil pointer evaluating interface {}.${name}`);
      if (cur instanceof Struct) {
        if (!Object.prototype.hasOwnProperty.call(cur.fields, name)) {
          this.fail(pos, text, `can't evaluate field ${name} in type ${cur.typeName}`);
        }
        const f = cur.fields[name];
        if (typeof f === 'function') {
          try {
            cur = (f as TemplateFunc)(...(callArgs ?? []));
          } catch (e) {
            if (e instanceof TemplateError) this.fail(pos, text, e.message);
            throw e;
          }
          return;
        }
        if (callArgs?.length) this.fail(pos, text, `${name} has arguments but cannot be invoked as function`);
        cur = f;
        return;
      }
      if (isPlainObject(cur)) {
        if (callArgs?.length) this.fail(pos, text, `${name} is not a method but has arguments`);
        cur = Object.prototype.hasOwnProperty.call(cur, name) ? cur[name] : missingKey(cur);
        return;
      }
      this.fail(pos, text, `can't evaluate field ${name} in type ${goTypeName(cur)}`);
    });
    return cur;
  }
}

export interface TemplateOptions {
  /** Extra functions (docker's set is always there). */
  funcs?: FuncMap;
  name?: string;
}

export class Template {
  private readonly nodes: Node[];
  private readonly lexer: Lexer;
  private readonly funcs: FuncMap;

  constructor(readonly source: string, opts: TemplateOptions = {}) {
    this.funcs = { ...DOCKER_FUNCS, ...(opts.funcs ?? {}) };
    this.lexer = new Lexer(source, opts.name ?? '');
    const items = this.lexer.run();
    this.nodes = new Parser(items, this.lexer, this.funcs).parse();
  }

  /** Runs the template on `data`; `funcs` overrides functions for this run (header rows). */
  execute(data: unknown, funcs?: FuncMap): string {
    const exec = new Exec(this.lexer, funcs ? { ...this.funcs, ...funcs } : this.funcs);
    exec.walk(this.nodes, data, { vars: [['$', data]] });
    return exec.out;
  }
}

export function parseTemplate(source: string, opts?: TemplateOptions): Template {
  return new Template(source, opts);
}

export function renderTemplate(source: string, data: unknown, opts?: TemplateOptions): string {
  return new Template(source, opts).execute(data);
}
