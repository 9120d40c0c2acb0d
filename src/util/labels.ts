/** A `label` filter's terms, `key` or `key=value` (the value may hold '='), against a label map: all must hold. */
export function labelsMatch(labels: Record<string, string> | null | undefined, wanted: string[]): boolean {
  return wanted.every((w) => {
    const i = w.indexOf('=');
    if (i < 0) return labels?.[w] !== undefined;
    return labels?.[w.slice(0, i)] === w.slice(i + 1);
  });
}
