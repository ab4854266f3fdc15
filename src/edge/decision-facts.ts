/**
 * The decision API's first step: a front proxy's check request (nginx `auth_request`, Envoy
 * ext_authz HTTP service, Traefik forwardAuth) as the ORIGINAL request's {@link RequestFacts}.
 * Each front says the original method, target and host its own way; the headers the front adds
 * for that (and its certificate header) are its own, not the client's, and count against neither
 * the client's `limits.headerCount` nor its `limits.headerBytes`.
 *
 * The front forwards the target it received, not the one cnfguard judged: the facts say so
 * (`targetForwardedRaw`), so the route is chosen by every reading an upstream could make of it.
 */
import type { IncomingMessage } from 'node:http';
import { GuardError } from '../oauth/reasons.ts';
import type { CertificateSource } from '../pipeline/client-cert.ts';
import type { RequestFacts } from '../pipeline/pipeline.ts';
import { HOP_BY_HOP } from '../pipeline/upstream-headers.ts';
import { pathOf } from '../pipeline/path.ts';
import type { HeaderLines } from './http-facts.ts';

export type DecisionFront = 'nginx' | 'envoy' | 'traefik';

/** The original request as a front proxy describes it. */
export interface Original {
  front: DecisionFront;
  method: string | undefined;
  target: string | undefined;
  hostLines: readonly string[] | undefined;
  /** False when the front says the original request was not HTTPS (Traefik's X-Forwarded-Proto). */
  overTls: boolean;
}

const ENVOY_PREFIX = '/envoy';

/**
 * Header lines each front adds to a check request itself (README recipes; Envoy's HTTP ext_authz
 * client; Traefik's forward.go). One line of each is the front's; a second copy is the client's.
 */
const FRONT_HEADERS: Readonly<Record<DecisionFront, ReadonlySet<string>>> = {
  nginx: new Set(['x-original-method', 'x-original-uri', 'x-original-content-length', 'x-original-transfer-encoding', 'x-forwarded-for']),
  envoy: new Set(['x-forwarded-proto', 'x-forwarded-for', 'x-request-id', 'x-envoy-expected-rq-timeout-ms', 'x-envoy-internal', 'x-forwarded-client-cert', 'content-length']),
  traefik: new Set(['x-forwarded-method', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-uri', 'x-forwarded-for', 'x-forwarded-port', 'x-forwarded-server', 'x-forwarded-prefix', 'x-real-ip']),
};

/** Most header lines a front may add to the client's: Node's own line limit on the decision API leaves this much room. */
export const FRONT_HEADER_ALLOWANCE = 32;

/**
 * Most header bytes a front may add to the client's, its certificate header foremost (nginx's
 * URL-encoded PEM is about 1.5 times the certificate's DER; Envoy's XFCC may carry the chain too):
 * Node's own byte limit on the decision API leaves this much room above `limits.headerBytes`, and
 * the pipeline judges the client's bytes alone against `limits.headerBytes` (431, a decision).
 */
export const FRONT_HEADER_BYTES_ALLOWANCE = 64 * 1024;

const one = (lines: string[] | undefined): string | undefined => (lines?.length === 1 ? lines[0] : undefined);

/** RFC 9110 §9.1: a method is a token (§5.6.2). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The front's one method line, when it is a method at all: an empty or spaced one is no method said, refused as a missing one. */
const methodOf = (lines: string[] | undefined): string | undefined => {
  const method = one(lines);
  return method !== undefined && TOKEN.test(method) ? method : undefined;
};

/** Which front is asking, and what it says the original request was; undefined for an unknown path. */
export function originalOf(req: IncomingMessage, lines: HeaderLines): Original | undefined {
  const url = req.url ?? '/';
  const path = pathOf(url);
  // nginx and Envoy say nothing of the scheme: the recipes listen with TLS only.
  if (path === '/nginx') return { front: 'nginx', method: methodOf(lines('x-original-method')), target: one(lines('x-original-uri')), hostLines: lines('host'), overTls: true };
  if (path === '/traefik') {
    // Traefik always sends X-Forwarded-Proto (forward.go): anything but one `https` is a plain-HTTP entry point.
    const overTls = one(lines('x-forwarded-proto'))?.toLowerCase() === 'https';
    return { front: 'traefik', method: methodOf(lines('x-forwarded-method')), target: one(lines('x-forwarded-uri')), hostLines: lines('x-forwarded-host'), overTls };
  }
  if (url === ENVOY_PREFIX || url.startsWith(`${ENVOY_PREFIX}/`) || url.startsWith(`${ENVOY_PREFIX}?`)) {
    const rest = url.slice(ENVOY_PREFIX.length);
    return { front: 'envoy', method: req.method, target: rest.startsWith('/') ? rest : `/${rest}`, hostLines: lines('host'), overTls: true };
  }
  return undefined;
}

/** Header size as Node's parser counts it against `maxHeaderSize`: name and value, no separators. */
const lineBytes = (name: string, value: string): number => name.length + value.length;

/**
 * The client's header lines and their bytes (as Node counts them on the proxy listener: the
 * target, and each line's name and value): all received, less one line of each header the front
 * adds itself (its certificate header among them; the longest line of that name, as the front's
 * own replaces the client's), less the check request's own hop-by-hop lines.
 */
function clientHeaders(req: IncomingMessage, lines: HeaderLines, front: DecisionFront, certificateHeader: string | undefined, target: string): { count: number; bytes: number } {
  const own = FRONT_HEADERS[front];
  const raw = req.rawHeaders;
  let count = raw.length / 2;
  let bytes = target.length;
  for (const field of raw) bytes += field.length;
  const dropOne = (name: string): void => {
    const values = lines(name);
    if (values === undefined) return;
    count--;
    bytes -= lineBytes(name, values.reduce((longest, value) => (value.length > longest.length ? value : longest), ''));
  };
  // No per-request copy of the front's set: the certificate header counts once, unless the set names it already.
  for (const name of own) dropOne(name);
  if (certificateHeader !== undefined && !own.has(certificateHeader)) dropOne(certificateHeader);
  // The check request's own hop (front to cnfguard): never the client's lines, whose hop-by-hop ones the front consumed.
  for (const name of HOP_BY_HOP) {
    for (const value of lines(name) ?? []) {
      count--;
      bytes -= lineBytes(name, value);
    }
  }
  return { count, bytes };
}

/**
 * Whether the client's request had a body, as far as the front says: the nginx lines of docs/httpsig.md,
 * X-Original-Content-Length and X-Original-Transfer-Encoding, the client's Content-Digest (any
 * front passing it), a client Content-Length that is not the front's own line. Traefik and Envoy
 * say nothing of an unsigned body (`cnfguard check` warns of httpsig routes behind the decision API).
 */
function withheldBody(lines: HeaderLines, front: DecisionFront): boolean {
  if (lines('content-digest') !== undefined || (front === 'nginx' && lines('x-original-transfer-encoding') !== undefined)) return true;
  const nonZero = (values: string[] | undefined, from: number): boolean => values !== undefined && values.slice(from).some((length) => length.trim() !== '0');
  return nonZero(lines('content-length'), FRONT_HEADERS[front].has('content-length') ? 1 : 0) || (front === 'nginx' && nonZero(lines('x-original-content-length'), 0));
}

/** The original request's facts; the check request carries no body, so neither does the original here. */
export function decisionFacts(req: IncomingMessage, lines: HeaderLines, peer: string | undefined, original: Original & { method: string; target: string }, certificates: CertificateSource): RequestFacts {
  let certificate;
  let certificateError;
  try {
    certificate = certificates.certificateOf({ socket: undefined, peerAddress: peer, headerLines: lines });
  } catch (err) {
    if (!(err instanceof GuardError)) throw err;
    certificateError = err;
  }
  const client = clientHeaders(req, lines, original.front, certificates.certificateHeaderOf(peer), original.target);
  return {
    method: original.method,
    target: original.target,
    targetForwardedRaw: true,
    hostLines: original.hostLines,
    headerCount: client.count,
    headerBytes: client.bytes,
    authorization: lines('authorization'),
    // The front passes the client's headers on: the DPoP proof among them.
    dpop: lines('dpop'),
    // And every field an HTTP message signature covers (Content-Digest, Signature, Signature-Input).
    fieldLines: lines,
    // The check request has no body: a client's one (said by its length, its chunking or its
    // digest) stays with the front, so a signature over it cannot be checked here.
    bodyWithheld: withheldBody(lines, original.front),
    peer,
    certificate,
    certificateError,
    body: { declaredLength: undefined, chunked: false, form: false },
  };
}
