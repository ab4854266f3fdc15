/**
 * The rules a route's `host` and `pathPrefix` match by, shared by the request's route step
 * (pipeline/route.ts) and the config checks (config/load.ts: routes that can never match).
 */

/** `*.example.com` matches names below example.com (any depth), never example.com itself. */
export function hostMatches(pattern: string, host: string): boolean {
  if (!pattern.startsWith('*.')) return pattern === host;
  const suffix = pattern.slice(1); // ".example.com"
  return host.length > suffix.length && host.endsWith(suffix);
}

/**
 * The segment a prefix guards: trailing slashes dropped (`/admin/` guards `/admin` too, which
 * every upstream dispatches to the same handler), `/` itself kept.
 */
export function segmentPrefix(prefix: string): string {
  const trimmed = prefix.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

/**
 * Path prefixes match whole segments, however the prefix is written: `/admin` and `/admin/` both
 * match `/admin`, `/admin/x` and `/admin;x` (a segment's parameters, which servlet containers
 * drop), not `/administrator`.
 */
export function pathMatches(prefix: string, path: string): boolean {
  const segment = segmentPrefix(prefix);
  if (!path.startsWith(segment)) return false;
  return segment === '/' || path.length === segment.length || path[segment.length] === '/' || path[segment.length] === ';';
}

/** Whether every host `inner` matches is matched by `outer` too. */
function hostCovers(outer: string | undefined, inner: string | undefined): boolean {
  if (outer === undefined) return true;
  if (inner === undefined) return false;
  if (outer === inner) return true;
  return outer.startsWith('*.') && (inner.startsWith('*.') ? inner.slice(1).endsWith(outer.slice(1)) : hostMatches(outer, inner));
}

/** Whether every path `inner` matches is matched by `outer` too. */
function pathCovers(outer: string | undefined, inner: string | undefined): boolean {
  if (outer === undefined) return true;
  if (inner === undefined) return false;
  return pathMatches(outer, inner);
}

/**
 * Routes that can never match because an earlier route matches every request they would:
 * a config error, since the operator meant something else. Returns [shadowed index, earlier index].
 */
export function shadowedRoutes(routes: readonly { host?: string | undefined; pathPrefix?: string | undefined }[]): [number, number][] {
  const found: [number, number][] = [];
  routes.forEach((route, j) => {
    const earlier = routes.findIndex((other, i) => i < j && hostCovers(other.host, route.host) && pathCovers(other.pathPrefix, route.pathPrefix));
    if (earlier !== -1) found.push([j, earlier]);
  });
  return found;
}
