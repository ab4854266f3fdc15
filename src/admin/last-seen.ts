/**
 * What cnfguard last saw of the services it depends on (the AS, the JWKS, each route's upstream),
 * recorded as a side effect of real traffic and read by `/status`: it never probes anything itself.
 * Only outcomes go in (an outcome name, a status code): never a token, a URL's secret or a body.
 */

export interface Sighting {
  ok: boolean;
  /** e.g. `active`, `timeout`, `HTTP 200`, `upstream_unreachable`. */
  detail: string;
  /** Milliseconds since the epoch. */
  at: number;
}

export interface LastSeen {
  /** `detail` as a number is an HTTP status, shown as `HTTP <n>`. Called per request: allocates nothing once `name` is known. */
  record(name: string, ok: boolean, detail: string | number): void;
  get(name: string): Sighting | undefined;
}

interface Entry {
  ok: boolean;
  detail: string | number;
  at: number;
}

export function createLastSeen(now: () => number = Date.now): LastSeen {
  const seen = new Map<string, Entry>();
  return {
    record(name, ok, detail) {
      const entry = seen.get(name);
      if (entry === undefined) seen.set(name, { ok, detail, at: now() });
      else {
        entry.ok = ok;
        entry.detail = detail;
        entry.at = now();
      }
    },
    get(name) {
      const entry = seen.get(name);
      return entry === undefined ? undefined : { ok: entry.ok, detail: typeof entry.detail === 'number' ? `HTTP ${entry.detail}` : entry.detail, at: entry.at };
    },
  };
}
