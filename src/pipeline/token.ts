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

/** Whether a request target carries an `access_token` query parameter (in any percent-encoding). */
export function queryCarriesToken(target: string): boolean {
  const hash = target.indexOf('#');
  const beforeFragment = hash === -1 ? target : target.slice(0, hash);
  const start = beforeFragment.indexOf('?');
  if (start === -1) return false;
  const query = beforeFragment.slice(start + 1);
  // Only a query that could spell the name (plainly or percent-encoded) needs parsing.
  if (!query.includes('%') && !/access_token/i.test(query)) return false;
  return carriesToken(new URLSearchParams(query));
}

/**
 * Whether parameters carry `access_token` under any spelling a framework would read as it:
 * any letter case, and PHP/Rails array forms (`access_token[]`, `access_token[x]`).
 */
function carriesToken(params: URLSearchParams): boolean {
  for (const name of params.keys()) {
    const bracket = name.indexOf('[');
    if ((bracket === -1 ? name : name.slice(0, bracket)).trim().toLowerCase() === 'access_token') return true;
  }
  return false;
}

/** Whether a content type is a form body, the one body RFC 6750 §2.2 would take a token from. */
export function isFormContentType(contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/x-www-form-urlencoded\s*(;|$)/i.test(contentType);
}

/** Whether a form body carries an `access_token` parameter. */
export function formCarriesToken(body: Buffer): boolean {
  return carriesToken(new URLSearchParams(body.toString('latin1')));
}
