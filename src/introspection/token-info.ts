/**
 * What an RFC 7662 introspection answer says about a token, as plain data. The answer is
 * validated here: anything that is not a JSON object with a boolean `active`, or whose
 * registered claims have the wrong types, is the authorization server's fault (503), not
 * the token's.
 */
import * as z from 'zod';

const numericDate = z.number().finite();

const introspectionAnswer = z.looseObject({
  active: z.boolean(),
  scope: z.string().optional(),
  client_id: z.string().optional(),
  username: z.string().optional(),
  token_type: z.string().optional(),
  exp: numericDate.optional(),
  iat: numericDate.optional(),
  nbf: numericDate.optional(),
  sub: z.string().optional(),
  aud: z.union([z.string(), z.array(z.string())]).optional(),
  iss: z.string().optional(),
  jti: z.string().optional(),
  cnf: z.record(z.string(), z.unknown()).optional(),
  // RFC 9470 §6: the user's authentication, for step-up (acr, auth_time).
  acr: z.string().optional(),
  auth_time: numericDate.optional(),
});

export interface TokenInfo {
  readonly active: boolean;
  readonly subject: string | undefined;
  readonly clientId: string | undefined;
  readonly scope: string | undefined;
  readonly tokenType: string | undefined;
  /** Seconds since the epoch. */
  readonly exp: number | undefined;
  readonly nbf: number | undefined;
  readonly iss: string | undefined;
  readonly aud: readonly string[];
  /** Confirmation members (RFC 7800), e.g. `x5t#S256`. */
  readonly cnf: Readonly<Record<string, unknown>> | undefined;
  /** RFC 9470: the authentication context class of the user's authentication (step-up). */
  readonly acr: string | undefined;
  /** RFC 9470: when the user last actively authenticated, seconds since the epoch (step-up). */
  readonly authTime: number | undefined;
  /** The whole answer, for claim -> header mappings. */
  readonly claims: Readonly<Record<string, unknown>>;
}

const NO_CLAIMS: Readonly<Record<string, unknown>> = Object.freeze({});

export const INACTIVE: TokenInfo = Object.freeze({
  active: false,
  subject: undefined,
  clientId: undefined,
  scope: undefined,
  tokenType: undefined,
  exp: undefined,
  nbf: undefined,
  iss: undefined,
  aud: [],
  cnf: undefined,
  acr: undefined,
  authTime: undefined,
  claims: Object.freeze({}),
});

export class InvalidIntrospectionAnswer extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidIntrospectionAnswer';
  }
}

/**
 * Values many tokens share (client ids, scopes, issuer, audience, token type, a certificate's
 * `cnf`) are kept once: with 100k cached tokens, one copy instead of 100k. Each table is bounded,
 * so unique values cannot grow it.
 */
const INTERN_LIMIT = 10_000;
const strings = new Map<string, string>();
const audiences = new Map<string, readonly string[]>();
const confirmations = new Map<string, Readonly<Record<string, unknown>>>();
const EMPTY_AUD: readonly string[] = Object.freeze([]);

/** The shared value for `key`, made by `make` the first time (and kept while the table has room). */
function shared<T>(table: Map<string, T>, key: string, make: () => T): T {
  let value = table.get(key);
  if (value === undefined) {
    value = make();
    if (table.size < INTERN_LIMIT) table.set(key, value);
  }
  return value;
}

function intern(value: string | undefined): string | undefined {
  return value === undefined || value.length > 256 ? value : shared(strings, value, () => value);
}

function audienceOf(aud: string | string[] | undefined): readonly string[] {
  if (aud === undefined) return EMPTY_AUD;
  if (typeof aud !== 'string') return Object.freeze(aud.map((a) => intern(a) as string));
  return shared(audiences, aud, () => Object.freeze([intern(aud) as string]));
}

/** A one-member `cnf` (the common case) is shared by every token of that certificate. */
function confirmationOf(cnf: Record<string, unknown> | undefined): Readonly<Record<string, unknown>> | undefined {
  if (cnf === undefined) return undefined;
  const members = Object.keys(cnf);
  const only = members.length === 1 ? members[0] : undefined;
  const value = only === undefined ? undefined : cnf[only];
  if (only === undefined || typeof value !== 'string' || value.length > 256) return Object.freeze({ ...cnf });
  return shared(confirmations, `${only}\0${value}`, () => Object.freeze({ [only]: value }));
}

export interface AnswerOptions {
  /** Keep the whole answer as `claims` (only claim -> header mappings need it; it costs memory per cached token). */
  keepClaims?: boolean;
}

/**
 * Reads an introspection answer. `{"active": false}` (with or without other members) is an
 * inactive token; a claim of the wrong type on an active token makes the answer unusable.
 */
export function tokenInfoFromAnswer(answer: unknown, options: AnswerOptions = {}): TokenInfo {
  if (answer !== null && typeof answer === 'object' && (answer as { active?: unknown }).active === false) return INACTIVE;
  const parsed = introspectionAnswer.safeParse(answer);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new InvalidIntrospectionAnswer(`introspection answer: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`);
  }
  const a = parsed.data;
  return Object.freeze({
    active: a.active,
    subject: a.sub,
    clientId: intern(a.client_id),
    scope: intern(a.scope),
    tokenType: intern(a.token_type),
    exp: a.exp,
    nbf: a.nbf,
    iss: intern(a.iss),
    aud: audienceOf(a.aud),
    cnf: confirmationOf(a.cnf),
    acr: intern(a.acr),
    authTime: a.auth_time,
    claims: options.keepClaims === true ? Object.freeze({ ...a }) : NO_CLAIMS,
  });
}
