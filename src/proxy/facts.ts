/**
 * The HTTP/1.1 edge's first step: a request as plain {@link RequestFacts}. Reads, never changes,
 * the request: what is removed before forwarding is decided by upstream-headers.ts.
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { GuardError } from '../oauth/errors.ts';
import type { CertificateSource } from '../pipeline/client-cert.ts';
import type { RequestFacts } from '../pipeline/pipeline.ts';
import { isFormContentType } from '../pipeline/token.ts';

export function requestFacts(req: IncomingMessage, certificates: CertificateSource): RequestFacts {
  const socket = req.socket as Partial<TLSSocket>;
  const peer = req.socket.remoteAddress;
  let certificate;
  let certificateError;
  try {
    certificate = certificates.certificateOf({
      socket: socket.encrypted === true ? (socket as TLSSocket) : undefined,
      peerAddress: peer,
      headers: req.headers,
      headersDistinct: req.headersDistinct,
    });
  } catch (err) {
    if (!(err instanceof GuardError)) throw err;
    certificateError = err;
  }
  const length = req.headers['content-length'];
  return {
    method: req.method ?? 'GET',
    target: req.url ?? '/',
    hostLines: req.headersDistinct.host,
    headerCount: req.rawHeaders.length / 2,
    authorization: req.headersDistinct.authorization,
    peer,
    certificate,
    certificateError,
    body: {
      declaredLength: length === undefined ? undefined : Number(length),
      chunked: length === undefined && req.headers['transfer-encoding'] !== undefined,
      form: isFormContentType(req.headers['content-type']),
    },
  };
}
