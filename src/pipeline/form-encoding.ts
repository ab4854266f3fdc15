/**
 * A form body's `Content-Encoding` (RFC 9110 §8.4), undone before the token search. cnfguard
 * forwards the body as it came, coding and all, and upstream form parsers undo the coding first
 * (Express's body-parser inflates gzip, deflate and br by default): searching the coded bytes let
 * `access_token` through inside a gzip body.
 *
 * Decoded rather than refused, so that a legitimate client compressing its forms keeps working;
 * the cost is bounded: the decoded output is capped at the same limit as the bytes read
 * (`limits.formBodyBytes`, or the route's `maxBodyBytes` when smaller), so a zip bomb stops at
 * that many bytes and is answered 413. A coding cnfguard cannot undo, or a body that does not
 * decode, is refused (`form_body_encoding`): what cannot be searched is never forwarded.
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';

export type DecodedForm =
  | { kind: 'decoded'; bytes: Buffer; codings: readonly string[] }
  | { kind: 'too_large'; codings: readonly string[] }
  | { kind: 'unsupported'; coding: string }
  | { kind: 'undecodable'; coding: string };

type Decoder = (input: Buffer, options: zlib.ZlibOptions & zlib.BrotliOptions) => Promise<Buffer>;
const gunzip = promisify(zlib.gunzip) as Decoder;
const inflate = promisify(zlib.inflate) as Decoder;
const inflateRaw = promisify(zlib.inflateRaw) as Decoder;
const brotli = promisify(zlib.brotliDecompress) as Decoder;

/**
 * The codings cnfguard undoes. A truncated gzip or deflate stream gives what it holds (a lenient
 * decoder would read that much). `deflate` is the zlib format (RFC 9110 §8.4.1.2); a raw deflate
 * stream, which some servers take too, is tried when that fails.
 */
const DECODERS: Readonly<Record<string, (input: Buffer, maxOutputLength: number) => Promise<Buffer>>> = {
  gzip: (input, maxOutputLength) => gunzip(input, { maxOutputLength, finishFlush: zlib.constants.Z_SYNC_FLUSH }),
  'x-gzip': (input, maxOutputLength) => gunzip(input, { maxOutputLength, finishFlush: zlib.constants.Z_SYNC_FLUSH }),
  deflate: async (input, maxOutputLength) => {
    try {
      return await inflate(input, { maxOutputLength, finishFlush: zlib.constants.Z_SYNC_FLUSH });
    } catch (err) {
      if (tooLarge(err)) throw err;
      return inflateRaw(input, { maxOutputLength, finishFlush: zlib.constants.Z_SYNC_FLUSH });
    }
  },
  br: (input, maxOutputLength) => brotli(input, { maxOutputLength }),
};

/** More codings than this on one body is no client's doing: refused as unsupported. */
const MAX_CODINGS = 3;

/** The codings of a `Content-Encoding` value in the order they were applied, `identity` and empty members dropped, lower case. */
export function contentCodings(header: string | undefined): string[] {
  if (header === undefined) return [];
  return header
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'identity');
}

const tooLarge = (err: unknown): boolean => (err as { code?: unknown } | null)?.code === 'ERR_BUFFER_TOO_LARGE';

/** The body with every coding undone (last applied, first undone), each step's output at most `limitBytes`. */
export async function decodeForm(body: Buffer, codings: readonly string[], limitBytes: number): Promise<DecodedForm> {
  if (codings.length > MAX_CODINGS) return { kind: 'unsupported', coding: codings.join(', ') };
  for (const coding of codings) if (DECODERS[coding] === undefined) return { kind: 'unsupported', coding };
  let bytes = body;
  for (const coding of [...codings].reverse()) {
    try {
      bytes = await (DECODERS[coding] as NonNullable<(typeof DECODERS)[string]>)(bytes, limitBytes);
    } catch (err) {
      if (tooLarge(err)) return { kind: 'too_large', codings };
      return { kind: 'undecodable', coding };
    }
  }
  return { kind: 'decoded', bytes, codings };
}
