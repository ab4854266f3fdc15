/**
 * What an RFC 7662 introspection answer says about a token, as plain data. The answer is
 * validated here: anything that is not a JSON object with a boolean `active`, or whose
 * registered claims have the wrong types, is the authorization server's fault (503), not
 * the token's.
 */
import { z } from 'zod';

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
  /** The whole answer, for claim -> header mappings. */
  readonly claims: Readonly<Record<string, unknown>>;
}

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
  claims: Object.freeze({}),
});

export class InvalidIntrospectionAnswer extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidIntrospectionAnswer';
  }
}

/**
 * Reads an introspection answer. `{"active": false}` (with or without other members) is an
 * inactive token; a claim of the wrong type on an active token makes the answer unusable.
 */
export function tokenInfoFromAnswer(answer: unknown): TokenInfo {
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
    clientId: a.client_id,
    scope: a.scope,
    tokenType: a.token_type,
    exp: a.exp,
    nbf: a.nbf,
    iss: a.iss,
    aud: Object.freeze(a.aud === undefined ? [] : typeof a.aud === 'string' ? [a.aud] : a.aud),
    cnf: a.cnf === undefined ? undefined : Object.freeze({ ...a.cnf }),
    claims: Object.freeze({ ...a }),
  });
}
