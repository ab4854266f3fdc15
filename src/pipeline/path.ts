/**
 * Step: the request target, parsed once, and the spellings of its path a route is judged on.
 *
 * Upstreams disagree about what a path means: Express matches case-insensitively, Tomcat and
 * Jetty drop `;params` (so `/public/..;/admin` is `/admin`), Windows stacks drop trailing dots,
 * and a second decoding turns `%2561` into `a`. cnfguard judges every request by two readings:
 * - the canonical path (RFC 3986 §6.2.2: unreserved escapes decoded, other escapes upper-cased,
 *   dot segments removed, repeated slashes merged), which is also what is forwarded;
 * - the permissive path: every escape decoded (repeatedly), `;params` dropped per segment,
 *   Unicode compatibility forms folded, trailing dots and spaces dropped, then dot segments removed.
 * Both are matched case-insensitively unless `paths.ignoreCase` is off. When the two readings
 * choose different routes the spelling is ambiguous and is refused (`path_ambiguous`, 400):
 * over-matching a protected route is safe, under-matching is a bypass.
 * Encoded slashes and backslashes, in any layer of encoding, and escapes that are not UTF-8 or
 * decode to control characters, are refused (`path_malformed`).
 * When the front forwards the target as received (the decision API), cnfguard does not control
 * what the upstream reads, so every reading in {@link rawReadings}, the unresolved ones included
 * (`/admin/../x` is below /admin to Express and gunicorn), and for a target starting with `//` the
 * one that takes its first segment as an authority (`//evil/admin` is /admin to `new URL` and
 * Python's `urlsplit`), must choose the same route.
 */
import { GuardError } from '../oauth/reasons.ts';

/** The path of a request target as received: no query (it may carry secrets), no fragment. */
export function pathOf(target: string): string {
  const end = target.search(/[?#]/);
  return end === -1 ? target : target.slice(0, end);
}

export interface ParsedTarget {
  /** The canonical path: matched, and forwarded. */
  path: string;
  /** `?…` or empty. */
  query: string;
  /** The path and query to forward. */
  target: string;
  /** The path as received: the permissive reading starts from it, before any dot segment is resolved. */
  received: string;
}

export interface RoutingPaths {
  /** The canonical path, case-folded when matching ignores case. */
  canonical: string;
  /** The permissive reading; the same string as `canonical` when the path has nothing to reinterpret. */
  permissive: string;
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;

function normalizeEscapes(path: string): string {
  return path.replace(/%([0-9A-Fa-f]{2})/g, (_match, hex: string) => {
    const char = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
  });
}

/** RFC 3986 §5.2.4 over segments (the leading empty segment already dropped). */
function removeDotSegments(segments: readonly string[]): string {
  const out: string[] = [];
  segments.forEach((segment, index) => {
    const last = index === segments.length - 1;
    if (segment === '.' || segment === '..') {
      if (segment === '..') out.pop();
      if (last) out.push('');
    } else out.push(segment);
  });
  return `/${out.join('/')}`;
}

/** Nothing to normalize: no escapes, no backslash, no repeated slash, no `.` or `..` segment. */
function isCanonical(path: string): boolean {
  return !path.includes('%') && !path.includes('\\') && !path.includes('//') && !/\/\.\.?(?:\/|$)/.test(path);
}

/** Splits a request target once. Throws `path_malformed` for targets cnfguard will not route. */
export function parseTarget(target: string): ParsedTarget {
  if (!target.startsWith('/')) throw new GuardError('path_malformed', { detail: 'request target is not origin-form' });
  const hash = target.indexOf('#');
  const withoutFragment = hash === -1 ? target : target.slice(0, hash);
  const queryStart = withoutFragment.indexOf('?');
  const rawPath = queryStart === -1 ? withoutFragment : withoutFragment.slice(0, queryStart);
  const query = queryStart === -1 ? '' : withoutFragment.slice(queryStart);
  if (isCanonical(rawPath)) return { path: rawPath, query, target: rawPath + query, received: rawPath };
  if (/%2f|%5c|\\/i.test(rawPath)) throw new GuardError('path_malformed', { detail: 'encoded slash or backslash in path' });
  const path = removeDotSegments(normalizeEscapes(rawPath).replace(/\/{2,}/g, '/').split('/').slice(1));
  return { path, query, target: path + query, received: rawPath };
}

/** Characters that make the permissive reading differ from the canonical one. */
const REINTERPRETABLE = /[%;\s\u0080-\uffff]|\.(?:\/|$)/;
const MAX_DECODING_ROUNDS = 3;

function decodeSegment(segment: string): string {
  let value = segment;
  for (let round = 0; round < MAX_DECODING_ROUNDS && value.includes('%'); round++) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(value);
    } catch {
      throw new GuardError('path_malformed', { detail: 'path escape is not UTF-8' });
    }
    if (/[/\\]/.test(decoded) || /%2f|%5c/i.test(decoded)) throw new GuardError('path_malformed', { detail: 'encoded slash or backslash in path' });
    value = decoded;
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new GuardError('path_malformed', { detail: 'control character in path' });
  return value;
}

/**
 * The non-ASCII characters whose simple case mapping is an ASCII letter (Java's
 * `Character.toLowerCase`/`toUpperCase`, which `equalsIgnoreCase` compares by; Unicode's simple
 * and Turkic case foldings): `"admİn".equalsIgnoreCase("admin")` is true in Java. Found by asking
 * Java for every code point; Å (U+212B, Angstrom) maps to å, not to ASCII.
 */
const ASCII_FOLDING = /[\u0130\u0131\u017f\u212a]/g;
const ASCII_FOLDS: Readonly<Record<string, string>> = { '\u0130': 'i', '\u0131': 'i', '\u017f': 's', '\u212a': 'k' };

function foldCase(value: string): string {
  // The simple mappings to ASCII first: İ's full lower case is `i` plus a combining dot, no `i`.
  // Then upper and lower, which folds what either alone leaves apart.
  return value.replace(ASCII_FOLDING, (char) => ASCII_FOLDS[char] ?? char).toUpperCase().toLowerCase();
}

function permissiveSegment(segment: string, ignoreCase: boolean): string {
  let value = decodeSegment(segment);
  const params = value.indexOf(';');
  if (params !== -1) value = value.slice(0, params);
  value = value.normalize('NFKC').trim();
  if (ignoreCase) value = foldCase(value);
  if (value === '.' || value === '..') return value;
  return value.replace(/[.\s]+$/, '');
}

/** How one upstream may read a raw path: each choice is one a real stack makes (see rawReadings). */
interface Reading {
  /** `none`: escapes kept (Express's router); `unreserved`: RFC 3986 §6.2.2; `full`: every escape, repeatedly (WSGI's PATH_INFO, a second decoder). */
  decode: 'none' | 'unreserved' | 'full';
  /** `;params` dropped per segment (servlet containers). */
  dropParams: boolean;
  /** Unicode compatibility forms folded, blanks and trailing dots dropped (Windows stacks). */
  fold: boolean;
  /** Repeated slashes merged into one (nginx's merge_slashes, Jetty). */
  mergeSlashes: boolean;
  /** Dot segments removed (Jetty, Go) or left for the router to match (Express, gunicorn). */
  resolve: boolean;
}

const READINGS: readonly Reading[] = (['none', 'unreserved', 'full'] as const).flatMap((decode) =>
  [false, true].flatMap((dropParams) =>
    [false, true].flatMap((fold) => [false, true].flatMap((mergeSlashes) => [false, true].map((resolve) => ({ decode, dropParams, fold, mergeSlashes, resolve })))),
  ),
);

function readSegment(segment: string, reading: Reading, ignoreCase: boolean): string {
  let value = reading.decode === 'none' ? segment : reading.decode === 'unreserved' ? normalizeEscapes(segment) : decodeSegment(segment);
  if (reading.dropParams) {
    const params = value.indexOf(';');
    if (params !== -1) value = value.slice(0, params);
  }
  if (reading.fold) {
    value = value.normalize('NFKC').trim();
    if (value !== '.' && value !== '..') value = value.replace(/[.\s]+$/, '');
  }
  return ignoreCase ? foldCase(value) : value;
}

/**
 * The path of a target that starts with `//` read as a network-path reference (RFC 3986 §4.2):
 * the first segment is an authority, and what follows it the path. `new URL(target, base)` (WHATWG:
 * any run of slashes before the authority of a special scheme) and Python's `urlsplit` read
 * `//evil/admin` as host `evil`, path `/admin`. Undefined for a target with one leading slash.
 */
export function afterAuthority(received: string): string | undefined {
  const authority = /^\/{2,}[^/]*/.exec(received);
  if (authority === null) return undefined;
  const path = received.slice(authority[0].length);
  return path === '' ? '/' : path;
}

/**
 * Every reading an upstream could make of a path cnfguard does not forward itself (a front such as
 * nginx forwards the target as received): the product of the choices in {@link Reading}, among
 * them the UNRESOLVED ones, where `/admin/../x` is still below `/admin` (Express and gunicorn
 * dispatch it to their /admin handler), each also of the path after the authority when the
 * target starts with `//` ({@link afterAuthority}). Case-folded when matching ignores case. Throws
 * `path_malformed` as {@link routingPaths} does.
 */
export function rawReadings(received: string, ignoreCase: boolean): string[] {
  const readings = new Set<string>();
  const networkPath = afterAuthority(received);
  for (const path of networkPath === undefined ? [received] : [received, networkPath]) {
    const segments = path.split('/').slice(1);
    for (const reading of READINGS) {
      let read = segments.map((segment) => readSegment(segment, reading, ignoreCase));
      if (reading.mergeSlashes) read = read.filter((segment, index, all) => segment !== '' || index === all.length - 1);
      readings.add(reading.resolve ? removeDotSegments(read) : `/${read.join('/')}`);
    }
  }
  return [...readings];
}

/** Whether a raw path reads one way only (up to case): no escape, `;`, blank, non-ASCII, dot segment, trailing dot or `//`. */
export function readsOneWay(received: string): boolean {
  return !REINTERPRETABLE.test(received) && !received.includes('//');
}

/**
 * The path as a stack reads it that decodes the whole target before it splits off the query: an
 * encoded `?` or `#` (`/admin%3Fx`, in any layer of encoding) then ends the path (`/admin`).
 * Permissive otherwise; undefined when no escape decodes to either.
 */
export function decodedBeforeQuery(received: string, ignoreCase: boolean): string | undefined {
  if (!received.includes('%')) return undefined;
  const segments = received.split('/').slice(1);
  const at = segments.findIndex((segment) => /[?#]/.test(decodeSegment(segment)));
  if (at === -1) return undefined;
  const kept = segments.slice(0, at + 1).map((segment, index) => {
    if (index < at) return permissiveSegment(segment, ignoreCase);
    // The segment up to the delimiter, as the permissive reading takes it.
    const decoded = decodeSegment(segment);
    return permissiveSegment(encodeURIComponent(decoded.slice(0, decoded.search(/[?#]/))), ignoreCase);
  });
  return removeDotSegments(kept);
}

/** The two readings of a path that routes are matched on. */
export function routingPaths(target: Pick<ParsedTarget, 'path' | 'received'>, ignoreCase: boolean): RoutingPaths {
  const canonical = ignoreCase ? target.path.toLowerCase() : target.path;
  if (!REINTERPRETABLE.test(target.received)) return { canonical, permissive: canonical };
  const segments = target.received
    .split('/')
    .slice(1)
    .map((segment) => permissiveSegment(segment, ignoreCase))
    .filter((segment, index, all) => segment !== '' || index === all.length - 1);
  return { canonical, permissive: removeDotSegments(segments) };
}
