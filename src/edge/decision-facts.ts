/**
 * The decision API's first step: a front proxy's check request (nginx `auth_request`, Envoy
 * ext_authz HTTP service, Traefik forwardAuth) as the ORIGINAL request's {@link RequestFacts}.
 * Each front says the original method, target and host its own way; the headers the front adds
 * for that are its own, not the client's, and do not count against the client's header limit.
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
  nginx: new Set(['x-original-method', 'x-original-uri', 'x-original-content-length', 'x-original-transfer-encoding']),
  envoy: new Set(['x-forwarded-proto', 'x-forwarded-for', 'x-request-id', 'x-envoy-expected-rq-timeout-ms', 'x-envoy-internal', 'x-forwarded-client-cert', 'content-length']),
  traefik: new Set(['x-forwarded-method', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-uri', 'x-forwarded-for', 'x-forwarded-port', 'x-forwarded-server', 'x-forwarded-prefix', 'x-real-ip']),
};

/** Most header lines a front may add to the client's: Node's own line limit on the decision API leaves this much room. */
export const FRONT_HEADER_ALLOWANCE = 32;

const one = (lines: string[] | undefined): string | undefined => (lines?.length === 1 ? lines[0] : undefined);

/** Which front is asking, and what it says the original request was; undefined for an unknown path. */
export function originalOf(req: IncomingMessage, lines: HeaderLines): Original | undefined {
  const url = req.url ?? '/';
  const path = pathOf(url);
  // nginx and Envoy say nothing of the scheme: the recipes listen with TLS only.
  if (path === '/nginx') return { front: 'nginx', method: one(lines('x-original-method')), target: one(lines('x-original-uri')), hostLines: lines('host'), overTls: true };
  if (path === '/traefik') {
    // Traefik always sends X-Forwarded-Proto (forward.go): anything but one `https` is a plain-HTTP entry point.
    const overTls = one(lines('x-forwarded-proto'))?.toLowerCase() === 'https';
    return { front: 'traefik', method: one(lines('x-forwarded-method')), target: one(lines('x-forwarded-uri')), hostLines: lines('x-forwarded-host'), overTls };
  }
  if (url === ENVOY_PREFIX || url.startsWith(`${ENVOY_PREFIX}/`) || url.startsWith(`${ENVOY_PREFIX}?`)) {
    const rest = url.slice(ENVOY_PREFIX.length);
    return { front: 'envoy', method: req.method, target: rest.startsWith('/') ? rest : `/${rest}`, hostLines: lines('host'), overTls: true };
  }
  return undefined;
}

/** The client's header lines: all received, less one line of each header the front adds itself (its certificate header among them). */
function clientHeaderCount(req: IncomingMessage, lines: HeaderLines, front: DecisionFront, certificateHeader: string | undefined): number {
  const own = FRONT_HEADERS[front];
  let count = req.rawHeaders.length / 2;
  // No per-request copy of the front's set: the certificate header counts once, unless the set names it already.
  for (const name of own) if (lines(name) !== undefined) count--;
  if (certificateHeader !== undefined && !own.has(certificateHeader) && lines(certificateHeader) !== undefined) count--;
  // The check request's own hop (front to cnfguard): never the client's lines, whose hop-by-hop ones the front consumed.
  for (const name of HOP_BY_HOP) count -= lines(name)?.length ?? 0;
  return count;
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
  return {
    method: original.method,
    target: original.target,
    targetForwardedRaw: true,
    hostLines: original.hostLines,
    headerCount: clientHeaderCount(req, lines, original.front, certificates.certificateHeaderOf(peer)),
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
