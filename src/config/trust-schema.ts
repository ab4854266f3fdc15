/**
 * The config of issue 29, "trust that travels": step-up per route (RFC 9470), the signed identity
 * assertion for the upstream (top level, and per route on/off or its audience and lifetime), and
 * the signed introspection answers' keys (RFC 9701). Each key carries its one-sentence description.
 */
import * as z from 'zod';
import { builtOnFirstUse } from './built-on-use.ts';
import { fieldSchemas, number, type FieldSchemas } from './schema-fields.ts';

/** The signing algorithms of assertions; the key file's type must fit the one chosen. */
export const ASSERTION_ALGORITHMS = ['ES256', 'EdDSA', 'PS256', 'RS256'] as const;
export type AssertionAlgorithm = (typeof ASSERTION_ALGORITHMS)[number];

/** RFC 9701 algorithms a signed introspection answer may use: asymmetric only. */
export const INTROSPECTION_SIGNING_ALGORITHMS = ['RS256', 'PS256', 'ES256', 'EdDSA', 'RS384', 'RS512', 'PS384', 'PS512', 'ES384', 'ES512', 'Ed25519'] as const;

/** Values of `responseFormat` that ask for encryption (RFC 9701 §5): refused with a clear message. */
const ENCRYPTED = /^(jwe|encrypted|jwt\+jwe|jwe\+jwt)$/i;

/**
 * Step-up, the assertion (top level and per route) and the keys signed introspection answers add,
 * built for each config schema (schema.ts buildConfigSchema).
 */
export function trustSchemas({ filePath, headerName, httpUrl }: Pick<FieldSchemas, 'filePath' | 'headerName' | 'httpUrl'>) {
  /** RFC 9470 `acr` values: printable ASCII without space, quote or backslash (they go into a challenge). */
  const acrValue = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'an acr value: printable ASCII, no spaces, quotes or backslashes');

  const stepUpSchema = z
    .strictObject({
      acrValues: z.array(acrValue).min(1).optional().describe("The token's acr must be one of these (RFC 9470); announced as acr_values in this order when unmet."),
      maxAgeSeconds: number(z.number().int().min(0))
        .optional()
        .describe("The user's last active authentication (the token's auth_time) may be at most this many seconds old; announced as max_age when unmet."),
      clockSkewSeconds: number(z.number().int().min(0).max(300))
        .default(5)
        .describe('How far auth_time may be ahead of cnfguard\'s clock, and how much the maxAgeSeconds window is widened, for clocks that differ a little.'),
    })
    .refine((value) => value.acrValues !== undefined || value.maxAgeSeconds !== undefined, { error: 'set acrValues, maxAgeSeconds or both' })
    .describe('Step-up (RFC 9470): the user authentication this route requires, checked after validation, binding and scopes; off unless set.');

  const lifetimeSeconds = number(z.number().int().min(10).max(3600));

  /** The top-level `assertion`: the default route's, and what every route's own settings start from. */
  const assertionSchema = z
    .strictObject({
      header: headerName.default('x-auth-assertion').describe('The request header that carries the assertion to the upstream (client-sent copies are always removed).'),
      keyFile: filePath.describe('PEM private key that signs assertions (EC P-256, Ed25519 or RSA of at least 2048 bits); read again on SIGHUP.'),
      algorithm: z.enum(ASSERTION_ALGORITHMS).default('ES256').describe('JWS algorithm of the assertions; must match the key (ES256: P-256, EdDSA: Ed25519, PS256/RS256: RSA).'),
      issuer: z.string().min(1).describe('The assertions\' iss: how the upstream recognises cnfguard.'),
      audience: z.string().min(1).optional().describe("The assertions' aud; default the route's upstream origin."),
      lifetimeSeconds: lifetimeSeconds.default(60).describe('Seconds from iat to exp; an assertion is reused for the same token and route while more than half of this remains.'),
    })
    .describe('A signed identity for the upstream: one JWT per forwarded request, verifiable with the JWKS cnfguard publishes; off unless set.');

  /** A route's `assertion`: false turns it off there; an object overrides audience and lifetime. */
  const routeAssertionSchema = z
    .union([
      z.literal(false),
      z.strictObject({
        audience: z.string().min(1).optional().describe("This route's assertions' aud (default the route's upstream origin)."),
        lifetimeSeconds: lifetimeSeconds.optional().describe("This route's assertion lifetime in seconds."),
      }),
    ])
    .describe('false: no assertion on this route; an object: this route\'s audience and lifetime (needs the top-level assertion).');

  /** The keys `introspection` gains for signed answers (RFC 9701); spread into its object schema. */
  const signedIntrospectionFields = {
    responseFormat: z
      .string()
      .superRefine((value, ctx) => {
        if (ENCRYPTED.test(value)) ctx.addIssue({ code: 'custom', message: 'encrypted introspection answers (RFC 9701 §5) are not supported: use jwt (signed) or json' });
        else if (value !== 'json' && value !== 'jwt') ctx.addIssue({ code: 'custom', message: 'json or jwt' });
      })
      .transform((value) => value as 'json' | 'jwt')
      .default('json')
      .describe('json: plain RFC 7662 answers; jwt: ask for application/token-introspection+jwt (RFC 9701) and accept only signed answers.'),
    jwksUri: httpUrl.optional().describe("The AS's keys for signed answers (responseFormat: jwt); default jwt.jwksUri; fetched with the AS's trust (introspection.ca)."),
    signingAlgorithms: z
      .array(z.enum(INTROSPECTION_SIGNING_ALGORITHMS))
      .min(1)
      .default(['RS256', 'PS256', 'ES256', 'EdDSA'])
      .describe('JWS algorithms a signed introspection answer may use (asymmetric only).'),
  };
  return { stepUpSchema, assertionSchema, routeAssertionSchema, signedIntrospectionFields };
}

type TrustSchemas = ReturnType<typeof trustSchemas>;
export type StepUpSettings = z.output<TrustSchemas['stepUpSchema']>;
export type AssertionSettings = z.output<TrustSchemas['assertionSchema']>;
export type RouteAssertionSettings = z.output<TrustSchemas['routeAssertionSchema']>;

/** Built on first use, for tests and tools; a load builds its own (buildConfigSchema). */
const trust = builtOnFirstUse(() => trustSchemas(fieldSchemas()));
export const stepUpSchema = builtOnFirstUse(() => trust.stepUpSchema);
export const assertionSchema = builtOnFirstUse(() => trust.assertionSchema);
export const signedIntrospectionFields = builtOnFirstUse(() => trust.signedIntrospectionFields);

/** Checks across keys: issuer and keys with responseFormat jwt; a route's assertion object needs the top-level one. */
export function checkTrust(
  value: { introspection: { responseFormat: string; issuer?: string | undefined; jwksUri?: string | undefined }; jwt?: { jwksUri: string } | undefined; assertion?: unknown; routes: readonly { assertion?: RouteAssertionSettings | undefined }[] },
  ctx: z.RefinementCtx,
): void {
  if (value.introspection.responseFormat === 'jwt') {
    if (value.introspection.issuer === undefined) ctx.addIssue({ code: 'custom', path: ['introspection', 'issuer'], message: 'required with responseFormat: jwt (the iss signed answers must carry)' });
    if (value.introspection.jwksUri === undefined && value.jwt === undefined) ctx.addIssue({ code: 'custom', path: ['introspection', 'jwksUri'], message: "required with responseFormat: jwt (the AS's keys), unless jwt.jwksUri is set" });
  }
  if (value.assertion !== undefined) return;
  value.routes.forEach((route, index) => {
    if (route.assertion !== undefined && route.assertion !== false) ctx.addIssue({ code: 'custom', path: ['routes', index, 'assertion'], message: 'needs the top-level assertion (keyFile, issuer)' });
  });
}
