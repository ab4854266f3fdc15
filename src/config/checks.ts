/**
 * Checks over validated settings that no single key's schema can make: listeners that would
 * collide (a config error, so `check` refuses what `run` would), and settings that are legal but
 * almost always a mistake (warnings: `check` prints them, `run` logs them).
 */
import type { Settings } from './schema.ts';
import type { ConfigProblem } from './problems.ts';
import { segmentPrefix } from '../routing/match.ts';

const WILDCARDS = new Set(['0.0.0.0', '::', '[::]', '']);
const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

/** Could a bind to `a` and one to `b` on the same port collide? Wildcards take every address. */
function sameAddress(a: string, b: string): boolean {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  return x === y || WILDCARDS.has(x) || WILDCARDS.has(y) || (LOOPBACK.has(x) && LOOPBACK.has(y));
}

/** Two of the proxy, admin and decision API listeners on one host:port (port 0, any free port, never collides). */
export function listenerClashes(settings: Settings): ConfigProblem[] {
  const listeners: { path: string; name: string; host: string; port: number }[] = [
    { path: 'listen', name: 'the proxy listener', ...settings.listen },
    { path: 'admin', name: 'the admin listener', ...settings.admin },
    ...(settings.decisionApi?.port === undefined ? [] : [{ path: 'decisionApi', name: 'the decision API', host: settings.decisionApi.host, port: settings.decisionApi.port }]),
  ];
  const problems: ConfigProblem[] = [];
  listeners.forEach((later, index) => {
    const earlier = listeners.slice(0, index).find((l) => l.port !== 0 && l.port === later.port && sameAddress(l.host, later.host));
    if (earlier !== undefined) {
      problems.push({
        path: `${later.path}.port`,
        message: `${later.host}:${later.port} is also ${earlier.name}'s address (${earlier.path}: ${earlier.host}:${earlier.port}); each listener needs its own port`,
      });
    }
  });
  return problems;
}

/** Legal settings that are probably mistakes. */
/** Every managed header name a config sets, with its path (identity, claim and assertion headers). */
function managedHeaderNames(settings: Settings): { path: string; name: string }[] {
  const named = (record: Readonly<Record<string, string | undefined>> | undefined, at: string, keys: boolean) =>
    Object.entries(record ?? {}).flatMap(([key, value]) => (keys ? [{ path: `${at}.${key}`, name: key }] : value === undefined ? [] : [{ path: `${at}.${key}`, name: value }]));
  return [
    ...named(settings.headers as Record<string, string | undefined>, 'headers', false),
    ...named(settings.claimHeaders, 'claimHeaders', true),
    ...(settings.assertion === undefined ? [] : [{ path: 'assertion.header', name: settings.assertion.header }]),
    ...settings.routes.flatMap((route, i) => [...named(route.headers as Record<string, string | undefined> | undefined, `routes[${i}].headers`, false), ...named(route.claimHeaders, `routes[${i}].claimHeaders`, true)]),
  ];
}

export function configWarnings(settings: Settings): ConfigProblem[] {
  const warnings: ConfigProblem[] = [];
  // Works (client copies of either spelling are removed), but nginx drops such a header by default.
  for (const { path, name } of managedHeaderNames(settings)) {
    if (name.includes('_')) warnings.push({ path, message: `${name} has an underscore: nginx drops such headers by default, and CGI, WSGI and Rack read it as ${name.replaceAll('_', '-')}; prefer -` });
  }
  if (new URL(settings.introspection.url).protocol === 'http:') {
    warnings.push({ path: 'introspection.url', message: 'http:// sends the tokens and the client credentials unencrypted; use https://' });
  }
  if (settings.binding === 'off' && settings.routes.every((route) => (route.binding ?? settings.binding) === 'off')) {
    warnings.push({
      path: 'binding',
      message: `off on every route${settings.routes.length > 0 ? ` (the default and all ${settings.routes.length})` : ''}: tokens are validated but never checked against a certificate or DPoP key, so a stolen token works`,
    });
  }
  const claimed = [settings.claimHeaders, ...settings.routes.map((route) => route.claimHeaders ?? {})].flatMap((mapping) => Object.keys(mapping));
  if (settings.decisionApi !== undefined && claimed.length > 0) {
    warnings.push({
      path: 'claimHeaders',
      message: `with decisionApi, the front must carry ${[...new Set(claimed.map((h) => h.toLowerCase()))].join(', ')} from cnfguard's answer itself (nginx: auth_request_set and proxy_set_header; Envoy: allowed_upstream_headers; Traefik: authResponseHeaders), or a client's copy reaches the application`,
    });
  }
  settings.routes.forEach((route, index) => {
    const prefix = route.pathPrefix;
    if (prefix === undefined || prefix === '/' || !prefix.endsWith('/')) return;
    const segment = segmentPrefix(prefix);
    warnings.push({
      path: `routes[${index}].pathPrefix`,
      message: `${JSON.stringify(prefix)} is read as the segment ${segment}: it guards ${segment} itself, ${segment}/… and ${segment};…, with or without the trailing slash (write ${JSON.stringify(segment)} to say so)`,
    });
  });
  // httpsig behind a front: the check request has no body, so no Content-Digest can be checked.
  const signed = [...(settings.methods.includes('httpsig') ? ['the default route'] : []), ...settings.routes.flatMap((route, index) => ((route.methods ?? settings.methods).includes('httpsig') ? [`routes[${index}]`] : []))];
  if (settings.decisionApi !== undefined && signed.length > 0) {
    warnings.push({
      path: 'decisionApi',
      message: `${signed.join(', ')} accept httpsig, but a front's check request carries no body: a signed request with a body is refused there (httpsig_body_unavailable), and an unsigned body is noticed only when the front says there is one (the nginx lines of docs/httpsig.md do; Envoy and Traefik do not), so put bodies that must be signed on cnfguard's own listener`,
    });
  }
  // A Unix socket's peers have no address: only a unixSocket entry believes them, and only they match one.
  const socketEntries = settings.trustedProxies.flatMap((proxy, index) => (proxy.unixSocket === true ? [index] : []));
  if (settings.decisionApi?.socket !== undefined && socketEntries.length === 0) {
    warnings.push({ path: 'decisionApi.socket', message: 'no trustedProxies entry has unixSocket: true, so every check through the socket is refused (403); add one with the header and format the front sends' });
  }
  if (settings.decisionApi?.socket === undefined) {
    for (const index of socketEntries) warnings.push({ path: `trustedProxies[${index}].unixSocket`, message: 'no decisionApi.socket is set, so no peer can match this entry' });
  }
  // The default route, then each route (which inherit methods and publicOrigin from the top level).
  const dpopRoutes = [{ path: 'publicOrigin', methods: settings.methods, origin: settings.publicOrigin }, ...settings.routes.map((route, index) => ({ path: `routes[${index}].publicOrigin`, methods: route.methods ?? settings.methods, origin: route.publicOrigin ?? settings.publicOrigin }))];
  for (const route of dpopRoutes) {
    if (!route.methods.includes('dpop') || route.origin !== undefined) continue;
    warnings.push({
      path: route.path,
      message: "unset on a DPoP route: a proof's htu must then be https://<Host>, accepted only for the server certificate's names or a route's host, on the listener's port or 443; set it to the origin clients call (required behind a proxy or ingress with its own name)",
    });
  }
  return warnings;
}
