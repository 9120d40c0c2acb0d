/** Docker's JSON progress messages, which the docker CLI and docker-compose render as bars. */
export interface JsonMessage {
  status?: string;
  id?: string;
  progressDetail?: { current?: number; total?: number };
  progress?: string;
  aux?: Record<string, unknown>;
}

export type Progress = (m: JsonMessage) => void;

function human(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  // Docker's units.HumanSize: four significant digits, decimal units.
  return `${Number(v.toPrecision(4))}${units[i]}`;
}

/** The bar Docker puts in "progress" (older clients print it verbatim). */
export function bar(current: number, total: number): string {
  if (total <= 0) return `${human(current)}`;
  // As Docker's jsonmessage draws it: "=" per 2%, then ">" (also at 100%), padded to 50.
  const width = 50;
  const filled = Math.max(0, Math.min(width, Math.floor((current / total) * width)));
  return `[${'='.repeat(filled)}>${' '.repeat(width - filled)}] ${human(current)}/${human(total)}`;
}

/** Limits byte-count messages to a few per second per layer, as Docker does, so streams stay small. */
export function throttled(progress: Progress, status: string, id: string, total: number): (current: number, force?: boolean) => void {
  let last = 0;
  return (current, force) => {
    const now = Date.now();
    if (!force && now - last < 100) return;
    last = now;
    progress({ status, progressDetail: { current, total }, progress: bar(current, total), id });
  };
}
