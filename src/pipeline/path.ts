/**
 * Step: the request path in one canonical spelling, so a route cannot be bypassed by spelling
 * the same path differently (`/%61dmin`, `//admin`, `/x/../admin`), and the upstream receives the
 * path that was matched. RFC 3986 §6.2.2: percent-encoded unreserved characters are decoded,
 * other escapes upper-cased, dot segments removed; repeated slashes are merged. Encoded slashes
 * and backslashes, which upstreams disagree about, are refused.
 */
import { GuardError } from '../oauth/errors.ts';

export interface NormalizedTarget {
  /** The canonical path. */
  path: string;
  /** The path and query to forward. */
  target: string;
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;

function normalizeEscapes(path: string): string {
  return path.replace(/%([0-9A-Fa-f]{2})/g, (_match, hex: string) => {
    const char = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
  });
}

/** RFC 3986 §5.2.4, on a path already split into segments. */
function removeDotSegments(path: string): string {
  const out: string[] = [];
  const segments = path.split('/').slice(1);
  segments.forEach((segment, index) => {
    const last = index === segments.length - 1;
    if (segment === '.' || segment === '..') {
      if (segment === '..') out.pop();
      if (last) out.push('');
    } else out.push(segment);
  });
  return `/${out.join('/')}`;
}

/** Throws `path_malformed` for targets cnfguard will not route: not origin-form, or with encoded slashes. */
/** Nothing to normalize: no escapes, no backslash, no repeated slash, no `.` or `..` segment. */
function isCanonical(path: string): boolean {
  return !path.includes('%') && !path.includes('\\') && !path.includes('//') && !/\/\.\.?(?:\/|$)/.test(path);
}

export function normalizeTarget(target: string): NormalizedTarget {
  if (!target.startsWith('/')) throw new GuardError('path_malformed', { detail: 'request target is not origin-form' });
  const hash = target.indexOf('#');
  const withoutFragment = hash === -1 ? target : target.slice(0, hash);
  const queryStart = withoutFragment.indexOf('?');
  const rawPath = queryStart === -1 ? withoutFragment : withoutFragment.slice(0, queryStart);
  const query = queryStart === -1 ? '' : withoutFragment.slice(queryStart);
  if (isCanonical(rawPath)) return { path: rawPath, target: rawPath + query };
  if (/%2f|%5c|\\/i.test(rawPath)) throw new GuardError('path_malformed', { detail: 'encoded slash or backslash in path' });
  const path = removeDotSegments(normalizeEscapes(rawPath).replace(/\/{2,}/g, '/'));
  return { path, target: path + query };
}
