/**
 * Request bodies at the edge: a form read into memory only when the pipeline asks (the token would
 * be allowed), under a per-request limit and one budget for every buffered byte in the process;
 * and a body of undeclared length cut off at the route's limit as it streams.
 */
import type { ProxyRequest } from './messages.ts';
import { Transform, type Readable } from 'node:stream';
import type { FormRead } from '../pipeline/pipeline.ts';
import { contentCodings, decodeForm } from '../pipeline/form-encoding.ts';
import { formCarriesToken, isFormContentType } from '../pipeline/token.ts';
import { GuardError } from '../oauth/reasons.ts';

/** Bytes held in memory for form bodies, across all requests (`limits.bufferedBodyBytes`). */
export interface BodyBudget {
  reserve(bytes: number): boolean;
  release(bytes: number): void;
  readonly inUse: number;
}

export function createBodyBudget(totalBytes: number): BodyBudget {
  let inUse = 0;
  return {
    reserve(bytes) {
      if (inUse + bytes > totalBytes) return false;
      inUse += bytes;
      return true;
    },
    release(bytes) {
      inUse = Math.max(0, inUse - bytes);
    },
    get inUse() {
      return inUse;
    },
  };
}

/**
 * Reads a form body of at most `limitBytes`, reserving its bytes in `budget`; `release` gives
 * them back (the edge calls it when the response is over). A body larger than the limit, or one
 * the budget cannot hold, is left unread.
 *
 * The bytes come back as received, to be forwarded so. A form body with a `Content-Encoding` is
 * searched here, decoded as the upstream's parser decodes it (pipeline/form-encoding.ts): its
 * decoded output past `limitBytes` is `too_large`; a token in it throws `token_in_body`, a coding
 * that cannot be undone `form_body_encoding` (both {@link GuardError}s the pipeline answers).
 * The pipeline's own search of the returned bytes then covers an unencoded body.
 */
export function formReader(req: ProxyRequest, budget: BodyBudget): { read: (limitBytes: number) => Promise<FormRead>; release: () => void } {
  let reserved = 0;
  const reserve = (bytes: number): boolean => {
    if (!budget.reserve(bytes)) return false;
    reserved += bytes;
    return true;
  };
  async function read(limitBytes: number): Promise<FormRead> {
    const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
    if (declared !== undefined && declared > limitBytes) return { kind: 'too_large' };
    if (declared !== undefined && !reserve(declared)) return { kind: 'busy' };
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of req as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > limitBytes) return { kind: 'too_large' };
        if (declared === undefined && !reserve(chunk.length)) return { kind: 'busy' };
        chunks.push(chunk);
      }
    } catch {
      return { kind: 'aborted' };
    }
    // A stream that ends short of its declared length was cut by the client.
    if (!req.complete) return { kind: 'aborted' };
    const bytes = Buffer.concat(chunks);
    const codings = contentCodings(req.headers['content-encoding']);
    if (codings.length > 0 && isFormContentType(req.headers['content-type'])) {
      const decoded = await decodeForm(bytes, codings, limitBytes);
      if (decoded.kind === 'too_large') return { kind: 'too_large' };
      if (decoded.kind !== 'decoded') throw new GuardError('form_body_encoding', { detail: `${decoded.kind === 'unsupported' ? 'unsupported' : 'undecodable'} content coding ${codingName(decoded.coding)}` });
      if (formCarriesToken(decoded.bytes)) throw new GuardError('token_in_body', { detail: `in a ${codings.join(', ')}-coded form body` });
    }
    return { kind: 'read', bytes };
  }
  return {
    read,
    release() {
      budget.release(reserved);
      reserved = 0;
    },
  };
}

/** IANA HTTP Content Coding registry: the names safe to log (a header value is the client's, and never logged as sent). */
const KNOWN_CODINGS = new Set(['gzip', 'x-gzip', 'deflate', 'br', 'compress', 'x-compress', 'zstd', 'aes128gcm', 'exi', 'pack200-gzip', 'dcb', 'dcz']);
const codingName = (coding: string): string => (KNOWN_CODINGS.has(coding) ? coding : coding.includes(',') ? 'list' : 'unrecognized');

/** The request body, cut off (and `onExceeded` called once) when it passes `limitBytes`. */
export function limitBody(req: ProxyRequest, limitBytes: number, onExceeded: () => void): Readable {
  let seen = 0;
  let exceeded = false;
  const limiter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen <= limitBytes) return callback(null, chunk);
      if (!exceeded) {
        exceeded = true;
        req.unpipe(limiter);
        onExceeded();
      }
      callback();
    },
  });
  return req.pipe(limiter);
}
