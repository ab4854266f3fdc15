/**
 * Step: the access token, from the one place cnfguard accepts it (RFC 6750 §2.1, RFC 9449 §7.1:
 * the Authorization header, scheme Bearer or DPoP). Tokens in the URL or in a form body are refused outright (§2, §5.3), as is any
 * ambiguity: a repeated or malformed header is `invalid_request`, never a guess.
 */
import { GuardError } from '../oauth/reasons.ts';
import { PROOF_SCHEMES, type ProofSchemeName } from '../proof/registry.ts';

/** The schemes an access token comes in: `Bearer` (RFC 6750) and each proof method's own (`DPoP`, RFC 9449 §7.1). */
const TOKEN_SCHEMES: ReadonlySet<string> = new Set(['bearer', ...PROOF_SCHEMES]);
/** A token scheme (any case), one or more spaces, a b64token (RFC 6750 §2.1, RFC 9449 §7.1). Scheme names are RFC 9110 tokens: `-` and `.` are the only ones to escape. */
const CREDENTIALS = new RegExp(`^(${[...TOKEN_SCHEMES].map((name) => name.replace(/[-.+*^$|]/g, '\\$&')).join('|')}) +([A-Za-z0-9\\-._~+/]+=*)$`, 'i');
const SCHEME = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+)(?: |$)/;
/** IANA HTTP Authentication Scheme registry (and DPoP): the names safe to log. */
const KNOWN_SCHEMES = new Set(['basic', 'bearer', 'digest', 'dpop', 'hoba', 'mutual', 'negotiate', 'ntlm', 'oauth', 'privatetoken', 'scram-sha-1', 'scram-sha-256', 'vapid', 'concealed', 'aws4-hmac-sha256', 'gnap']);

/** The schemes an access token comes in, lower case: `bearer` (RFC 6750) and each proof method's (`dpop`, RFC 9449 §7.1). */
export type TokenScheme = 'bearer' | ProofSchemeName;

export interface Credentials {
  scheme: TokenScheme;
  token: string;
}

/**
 * The access token and its scheme from the Authorization header values
 * (`req.headersDistinct.authorization`: Node would otherwise silently keep one of several). Throws
 * a {@link GuardError}: `credentials_missing` when there is no header or only another scheme's
 * credentials (RFC 6750 §3.1: no error code then), `authorization_duplicated` (also one Bearer and
 * one DPoP line) or `authorization_malformed` otherwise.
 */
export function credentialsFrom(authorization: readonly string[] | undefined): Credentials {
  if (authorization === undefined || authorization.length === 0) throw new GuardError('credentials_missing');
  if (authorization.length > 1) throw new GuardError('authorization_duplicated');
  const value = withoutOptionalWhitespace(authorization[0] ?? '');
  // The well-formed case in one match; anything else is told apart below.
  const credentials = CREDENTIALS.exec(value);
  if (credentials !== null) return { scheme: (credentials[1] as string).toLowerCase() as TokenScheme, token: credentials[2] as string };
  const scheme = SCHEME.exec(value)?.[1]?.toLowerCase();
  if (scheme === undefined) throw new GuardError('authorization_malformed');
  if (!TOKEN_SCHEMES.has(scheme)) {
    // Only a registered scheme name is logged: `Authorization: <token>` has no scheme, and its
    // first characters would otherwise read as one.
    const named = KNOWN_SCHEMES.has(scheme) ? scheme : 'unrecognized';
    throw new GuardError('credentials_missing', { detail: `unsupported authorization scheme ${named}` });
  }
  throw new GuardError('authorization_malformed');
}

const isOptionalWhitespace = (code: number): boolean => code === 0x20 || code === 0x09;

/** RFC 9110 §5.6.3: optional whitespace is SP and HTAB only, not every Unicode space. (Checked at the ends first: a regex would walk the whole token.) */
function withoutOptionalWhitespace(value: string): string {
  return isOptionalWhitespace(value.charCodeAt(0)) || isOptionalWhitespace(value.charCodeAt(value.length - 1)) ? value.replace(/^[ \t]+|[ \t]+$/g, '') : value;
}

/** Whether a request target carries an `access_token` query parameter (in any spelling {@link nameReadsAsToken} knows). */
export function queryCarriesToken(target: string): boolean {
  const hash = target.indexOf('#');
  const beforeFragment = hash === -1 ? target : target.slice(0, hash);
  const start = beforeFragment.indexOf('?');
  if (start === -1) return false;
  const query = beforeFragment.slice(start + 1);
  // Only a query that could spell the name (plainly, mangled or percent-encoded) needs parsing.
  if (!query.includes('%') && !SPELLS_TOKEN.test(query)) return false;
  return carriesToken(query);
}

/** `access`, one character (`_`, or what a parser turns into one), `token`: every spelling below contains it once decoded. */
const SPELLS_TOKEN = /access.token/is;
/** A name's leading characters that some parser drops: whitespace (PHP), brackets (qs reads `[x]` as `x`, Rack `[[x]]` as `x`), a dot (qs `allowDots`: `.x` is `[x]`). */
const LEADING_DROPPED = /^[\s[\].]+/;
/** Where a name ends for a parser that nests (qs, Rack, PHP arrays: `x[]`, `x[0]`, `x]`; qs `allowDots`: `x.y`) or stops at NUL (C-string parsers). */
const NESTING = /[[\].\0]/;
/** Where a name ends for PHP's reading, which first turns space, `.` and an unmatched `[` into `_` (`access.token`, `access token`, `access[token`). */
const PHP_END = /[\]\0]/;

/**
 * Whether a parameter name (still percent-encoded, as it came) reads as `access_token` to some
 * common parser. Over-matching is safe here (the request is refused) and under-matching lets an
 * upstream pick up an unchecked second token (RFC 6750 §2.2/§2.3), so every reading counts:
 * - decoded: `+` as space, `%XX` (also twice: `%255F`), IIS's `%uXXXX`;
 * - any letter case, surrounding whitespace;
 * - qs (Express `req.body`/`req.query`, extended or not): a leading `[x]` is `x`; `x[]`, `x[0]`,
 *   `x[y]` and with `allowDots` `x.y` nest under `x`; Rack: leading brackets dropped;
 * - PHP: leading spaces dropped, space, `.` and an unmatched `[` become `_`, `x[...]` is `x`.
 * A name nested under another (`user[access_token]`) is not `access_token` to any of them.
 */
export function nameReadsAsToken(encoded: string): boolean {
  const name = decodeName(encoded).toLowerCase();
  if (!SPELLS_TOKEN.test(name)) return false;
  const bare = name.replace(LEADING_DROPPED, '');
  const nested = bare.split(NESTING, 1)[0] ?? '';
  if (nested.trim() === 'access_token') return true;
  return (bare.split(PHP_END, 1)[0] ?? '').trim().replace(/[\s.[]/g, '_') === 'access_token';
}

/** Percent-decoding as lenient as any parser's: `+`, `%XX` (bytes as UTF-8, else one by one), `%uXXXX`; repeated while it changes (a double-decoding stack), at most three times. */
function decodeName(encoded: string): string {
  let name = encoded.replace(/\+/g, ' ');
  for (let round = 0; round < 3 && name.includes('%'); round++) {
    const decoded = name.replace(/%u([0-9a-f]{4})/gi, (_match, hex: string) => String.fromCharCode(parseInt(hex, 16))).replace(/(?:%[0-9a-f]{2})+/gi, decodeBytes);
    if (decoded === name) break;
    name = decoded;
  }
  return name;
}

function decodeBytes(run: string): string {
  try {
    return decodeURIComponent(run);
  } catch {
    return Buffer.from(run.replace(/%/g, ''), 'hex').toString('latin1');
  }
}

/**
 * Whether `application/x-www-form-urlencoded` text (a query or a decoded form body) carries a
 * parameter that reads as `access_token` ({@link nameReadsAsToken}). Pairs are split at `&` and
 * also at `;` (older Python and Go parsers); a name ends at the first `=`, or for qs at the first
 * `]=` (`access_token[=]=x` is qs's `access_token`): both are tried.
 */
function carriesToken(text: string): boolean {
  for (const pair of text.split(/[&;]/)) {
    if (!SPELLS_TOKEN.test(pair) && !pair.includes('%')) continue;
    const equals = pair.indexOf('=');
    if (nameReadsAsToken(equals === -1 ? pair : pair.slice(0, equals))) return true;
    const bracketEquals = pair.indexOf(']=');
    if (bracketEquals !== -1 && nameReadsAsToken(pair.slice(0, bracketEquals + 1))) return true;
  }
  return false;
}

/** Whether a content type is a form body, the one body RFC 6750 §2.2 would take a token from. */
export function isFormContentType(contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/x-www-form-urlencoded\s*(;|$)/i.test(contentType);
}

/** Whether a form body (its bytes as the upstream decodes them: see `formReader` for a `Content-Encoding`) carries an `access_token` parameter. */
export function formCarriesToken(body: Buffer): boolean {
  const text = body.toString('latin1');
  // A UTF-16 body (a `charset=utf-16` some stacks honour) spells the name with NULs between its letters.
  return carriesToken(text) || (text.includes('\0') && carriesToken(text.replace(/\0/g, '')));
}
