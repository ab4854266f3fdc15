/**
 * Step 9, applied by the edge: the header block the upstream receives. Built fresh from the
 * client's headers, so that everything an upstream could read as identity, as the original URL,
 * host or client address, or as a hop's business, was set by cnfguard or is absent:
 * - hop-by-hop fields (RFC 9110 §7.6.1) and whatever `Connection` names, except the fields
 *   cnfguard sets itself;
 * - every identity, claim and forwarded-certificate header any route uses, and the forwarding
 *   headers, also when spelled with `_` for `-` (CGI/WSGI stacks read `x_auth_subject` as
 *   `X-Auth-Subject`);
 * then the verified identity, `Host` and `X-Forwarded-Host` from the validated Host line,
 * `X-Forwarded-For` (appended to only behind a trusted proxy), `-Proto` and the request id.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { PROOF_HEADERS } from '../proof/registry.ts';
import type { RoutePolicy } from './route.ts';

/** RFC 9110 §7.6.1 connection-specific fields, plus `expect` (the edge already answered it). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'expect']);

export { FORWARDING_HEADERS } from '../forwarding-headers.ts';

/** Fields a `Connection` header may not remove: cnfguard sets or checked them. */
const KEPT_AGAINST_CONNECTION = new Set(['host', 'content-length', 'content-type', 'authorization']);

/** The two values nearly every message carries, each read once (a Set a message cost ~1 µs twice per request). */
const KEEP_ALIVE_ONLY: ReadonlySet<string> = new Set(['keep-alive']);
const CLOSE_ONLY: ReadonlySet<string> = new Set(['close']);

/** Every name `Connection` lists, lower-case. */
export function connectionOptions(connection: string | undefined): ReadonlySet<string> | undefined {
  if (connection === undefined) return undefined;
  if (connection === 'keep-alive' || connection === 'Keep-Alive') return KEEP_ALIVE_ONLY;
  if (connection === 'close' || connection === 'Close') return CLOSE_ONLY;
  const names = new Set<string>();
  for (const name of connection.split(',')) {
    const token = name.trim().toLowerCase();
    if (token !== '') names.add(token);
  }
  return names;
}

export interface UpstreamHeaderInput {
  route: RoutePolicy;
  /** The verdict's identity headers (identityHeadersOf), set over whatever the client sent. */
  identityHeaders: Readonly<Record<string, string>>;
  /** The validated Host line. */
  host: string | undefined;
  requestId: string;
  peer: string | undefined;
  /** The peer is a `trustedProxies` hop: its X-Forwarded-For is kept and appended to. */
  peerIsTrustedProxy: boolean;
  /** A websocket upgrade keeps `Connection: upgrade` and `Upgrade`. */
  upgrade: boolean;
  /** Lower-case names no client may send: identity, claim, certificate and forwarding headers. */
  stripped: ReadonlySet<string>;
}

export function upstreamHeaders(inbound: IncomingHttpHeaders, input: UpstreamHeaderInput): Record<string, string | string[]> {
  const { route, upgrade, stripped } = input;
  const named = connectionOptions(inbound.connection);
  const out: Record<string, string | string[]> = {};
  for (const name in inbound) {
    const value = inbound[name];
    // HTTP/2 pseudo-headers (`:path`, `:authority`…) are the request line, not fields.
    if (value === undefined || HOP_BY_HOP.has(name) || name === 'host' || name.startsWith(':')) continue;
    if (named?.has(name) === true && !KEPT_AGAINST_CONNECTION.has(name)) continue;
    if (stripped.has(name.includes('_') ? name.replaceAll('_', '-') : name)) continue;
    // A proof (DPoP) goes with the token it proves: both, or neither.
    if ((name === 'authorization' || PROOF_HEADERS.has(name)) && route.stripAuthorization) continue;
    out[name] = value;
  }
  if (input.host !== undefined) out.host = input.host;
  if (upgrade) {
    out.connection = 'upgrade';
    if (inbound.upgrade !== undefined) out.upgrade = inbound.upgrade;
  }
  Object.assign(out, input.identityHeaders);
  const prior = inbound['x-forwarded-for'];
  if (input.peer !== undefined) out['x-forwarded-for'] = input.peerIsTrustedProxy && prior ? `${prior}, ${input.peer}` : input.peer;
  out['x-forwarded-proto'] = 'https';
  if (input.host !== undefined) out['x-forwarded-host'] = input.host;
  out['x-request-id'] = input.requestId;
  return out;
}

/**
 * Fields a trailer may not carry (RFC 9110 §6.5.1): framing, routing, authentication, content
 * handling and request modifiers. An upstream that merges trailers into its headers would
 * otherwise read them as if they had been checked.
 */
const NOT_IN_TRAILERS: ReadonlySet<string> = new Set([...PROOF_HEADERS, 'host', 'content-length', 'content-type', 'content-encoding', 'content-range', 'authorization', 'cookie', 'set-cookie', 'range', 'max-forwards', 'cache-control', 'pragma', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since', 'if-range']);

/**
 * The request trailers the upstream receives: the client's, without pseudo-headers, hop-by-hop
 * fields, fields a trailer may not carry, and every name no client may send (`stripped`: identity,
 * claim, certificate and forwarding headers, also spelled with `_`).
 */
export function upstreamTrailers(inbound: IncomingHttpHeaders, stripped: ReadonlySet<string>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in inbound) {
    const value = inbound[name];
    if (value === undefined || name.startsWith(':') || HOP_BY_HOP.has(name) || NOT_IN_TRAILERS.has(name)) continue;
    if (stripped.has(name.includes('_') ? name.replaceAll('_', '-') : name)) continue;
    out[name] = value;
  }
  return out;
}
