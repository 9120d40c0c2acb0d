/**
 * Go's text/tabwriter, as docker uses it: cells end with a tab, a column is as wide as its widest
 * cell plus padding (and at least minwidth), the last cell of a line is not aligned. Columns are
 * aligned per block of consecutive lines that have that column, exactly as Go does it, so custom
 * `table` formats with uneven rows come out the same as docker's.
 */

export interface TabwriterOptions {
  minwidth: number;
  padding: number;
  padchar?: string;
}

/** docker's tables: tabwriter.NewWriter(out, 10, 1, 3, ' ', 0). */
export const TABLE: TabwriterOptions = { minwidth: 10, padding: 3 };

interface Cell { text: string; width: number }
interface Line { cells: Cell[]; newline: boolean }

function displayWidth(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

export function tabwrite(text: string, opts: TabwriterOptions = TABLE): string {
  const pad = opts.padchar ?? ' ';
  let out = '';
  let lines: Line[] = [];
  const widths: number[] = [];

  const writeLines = (from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const line = lines[i]!;
      line.cells.forEach((c, j) => {
        out += c.text;
        if (j < widths.length) out += pad.repeat(Math.max(0, widths[j]! - c.width));
      });
      if (line.newline) out += '\n';
    }
  };

  // Go's format(): a column block is a run of lines that have a terminated cell in that column.
  const format = (line0: number, line1: number) => {
    const column = widths.length;
    for (let t = line0; t < line1; t++) {
      if (column >= lines[t]!.cells.length - 1) continue;
      writeLines(line0, t);
      line0 = t;
      let width = opts.minwidth;
      for (; t < line1; t++) {
        const cells = lines[t]!.cells;
        if (column >= cells.length - 1) break;
        width = Math.max(width, cells[column]!.width + opts.padding);
      }
      widths.push(width);
      format(line0, t);
      widths.pop();
      line0 = t;
    }
    writeLines(line0, line1);
  };

  const flush = () => {
    if (lines.length === 0) return;
    format(0, lines.length);
    lines = [];
  };

  const rawLines = text.split('\n');
  const endsWithNewline = text.endsWith('\n');
  if (endsWithNewline) rawLines.pop();
  rawLines.forEach((raw, idx) => {
    const parts = raw.split('\t');
    lines.push({ cells: parts.map((p) => ({ text: p, width: displayWidth(p) })), newline: idx < rawLines.length - 1 || endsWithNewline });
    // A line without tabs ends every column block, as in Go.
    if (parts.length === 1) flush();
  });
  flush();
  return out;
}

/** Convenience for code that has rows rather than tab-separated text. */
export function renderTable(rows: string[][], opts: TabwriterOptions = TABLE): string {
  return tabwrite(rows.map((r) => `${r.join('\t')}\n`).join(''), opts);
}
