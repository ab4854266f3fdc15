/**
 * "Did you mean …": the closest known name to a misspelt one (a config key, a command, an option),
 * by edit distance with case differences counting little, so `clientCA` finds `clientCa`.
 */

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
function distance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      const row = d[i] as number[];
      const above = d[i - 1] as number[];
      row[j] = Math.min((above[j] as number) + 1, (row[j - 1] as number) + 1, (above[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(row[j] as number, ((d[i - 2] as number[])[j - 2] as number) + 1);
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

/** The known name closest to `name`, if one is close enough to be what was meant. */
export function didYouMean(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestScore = Infinity;
  for (const candidate of known) {
    if (candidate === name) continue;
    // A difference in case alone is nearly no difference; otherwise edits count fully.
    const score = candidate.toLowerCase() === name.toLowerCase() ? 0.5 : distance(name.toLowerCase(), candidate.toLowerCase());
    if (score < bestScore) {
      best = candidate;
      bestScore = score;
    }
  }
  const allowed = Math.max(1, Math.floor(Math.min(name.length, best?.length ?? 0) / 3));
  return bestScore <= allowed ? best : undefined;
}

/** ` (did you mean "x"?)`, or nothing. */
export function suggestion(name: string, known: Iterable<string>): string {
  const match = didYouMean(name, known);
  return match === undefined ? '' : ` (did you mean ${JSON.stringify(match)}?)`;
}
