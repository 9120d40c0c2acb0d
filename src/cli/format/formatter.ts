/**
 * docker's formatter.Context: picks the template for `--format` ("table", "json", a custom Go
 * template, or the command's default), renders one line per item and, for tables, a header row
 * made from the same template, then aligns everything with the tabwriter.
 */
import { HEADER_FUNCS, Template, TemplateError, type Struct } from '../gotemplate.js';
import { tabwrite } from './table.js';

export interface ListFormat {
  /** The default, e.g. "table {{.ID}}\t{{.Names}}". */
  table: string;
  /** Column titles by field name, as docker names them. */
  headers: Record<string, string>;
  /** What -q prints; docker uses {{.ID}} everywhere. */
  quiet?: string;
}

export class FormatError extends Error {
  override name = 'FormatError';
}

/** Resolves docker's format keywords into the template that will run. */
export function chooseFormat(source: string | undefined, kind: ListFormat, quiet = false): string {
  const src = source ?? '';
  if (src === '' || src === 'table') return quiet ? kind.quiet ?? '{{.ID}}' : kind.table;
  if (src === 'json') return '{{json .}}';
  return quiet ? kind.quiet ?? '{{.ID}}' : src;
}

/** docker's preFormat: strip "table", trim spaces, and turn the two-character `\t` and `\n` into real ones. */
function preFormat(format: string): { body: string; table: boolean } {
  const table = format.startsWith('table');
  let body = table ? format.slice('table'.length) : format;
  body = body.replace(/^ +| +$/g, '').replace(/\\t/g, '\t').replace(/\\n/g, '\n');
  return { body, table };
}

export function parseFormat(body: string): Template {
  try {
    return new Template(body);
  } catch (e) {
    if (e instanceof TemplateError) throw new FormatError(`template parsing error: ${e.message}`);
    throw e;
  }
}

/** One line per item; a failing template is reported as docker words it. */
function executeEach(tmpl: Template, items: unknown[]): string {
  let out = '';
  for (const item of items) {
    try {
      out += `${tmpl.execute(item)}\n`;
    } catch (e) {
      if (e instanceof TemplateError) throw new FormatError(`template parsing error: ${e.message}`);
      throw e;
    }
  }
  return out;
}

/** Renders items with a resolved format; the result ends with a newline per item. */
export function renderList(format: string, items: Struct[], headers: Record<string, string>): string {
  const { body, table } = preFormat(format);
  const tmpl = parseFormat(body);
  const rows = executeEach(tmpl, items);
  if (!table) return rows;
  let header = '';
  try {
    header = tmpl.execute(headers, HEADER_FUNCS);
  } catch {
    // docker ignores errors in the header row and prints what it got.
  }
  return tabwrite(`${header}\n${rows}`);
}

/** The usual path of a list command: flag values to output text. */
export function formatList(source: string | undefined, items: Struct[], kind: ListFormat, quiet = false): string {
  return renderList(chooseFormat(source, kind, quiet), items, kind.headers);
}

/**
 * `inspect`: without a format a JSON array indented by four spaces (docker's json.Indent of the
 * daemon's bytes); with one, the template runs on each raw object. Unlike list formats, docker
 * does not turn a typed `\n` into a newline here, so `{{"\n"}}` stays a Go string escape.
 */
export function renderInspect(items: unknown[], format?: string): string {
  if (!format) return items.length === 0 ? '[]\n' : `${JSON.stringify(items, null, 4)}\n`;
  const body = format === 'json' ? '{{json .}}' : format;
  return executeEach(parseFormat(body), items);
}
