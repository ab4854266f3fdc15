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
  record(name: string, ok: boolean, detail: string): void;
  get(name: string): Sighting | undefined;
}

export function createLastSeen(now: () => number = Date.now): LastSeen {
  const seen = new Map<string, Sighting>();
  return {
    record(name, ok, detail) {
      seen.set(name, { ok, detail, at: now() });
    },
    get: (name) => seen.get(name),
  };
}
