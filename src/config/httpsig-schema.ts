/**
 * The `httpsig` block: how HTTP Message Signatures (RFC 9421, draft-richer-oauth-httpsig-03) are
 * checked on routes whose `methods` include httpsig. Experimental, as the draft is.
 */
import * as z from 'zod';
import { SIGNATURE_ALGORITHMS } from '../proof/http-signature-base.ts';
import { HTTPSIG_PROFILES } from '../proof/httpsig.ts';
import { number } from './schema-fields.ts';

/** The `httpsig` block's schema, built for each config schema (schema.ts buildConfigSchema). */
export function buildHttpsigSchema() {
  /** A covered component name as RFC 9421 writes it: a lower-case field name, or a derived `@` name. */
  const componentName = z
    .string()
    .regex(/^@?[!#$%&'*+\-.^_`|~0-9a-z]+$/, 'a lower-case field name or an @-derived component name, e.g. content-type')
    .describe('A component every httpsig signature must cover, e.g. content-type or @authority.');

  return z
    .strictObject({
      profile: z.enum(HTTPSIG_PROFILES).default('draft-richer-oauth-httpsig-03').describe('The httpsig profile checked: the draft revision whose rules apply (experimental; only draft-richer-oauth-httpsig-03 today).'),
      algorithms: z
        .array(z.enum(SIGNATURE_ALGORITHMS))
        .min(1)
        .default(['ed25519', 'ecdsa-p256-sha256', 'rsa-pss-sha512'])
        .transform((algs) => [...new Set(algs)])
        .describe('RFC 9421 signature algorithms accepted; a cnf.jwk key\'s JWS alg maps onto these (Ed25519, ES256, ES384, PS512).'),
      maxAgeSeconds: number(z.number().int().positive().max(3600)).default(30).describe('How old, in seconds, a signature\'s created parameter may be.'),
      clockSkewSeconds: number(z.number().int().min(0).max(300)).default(5).describe('How far ahead of this clock, in seconds, a signature\'s created parameter may be.'),
      requiredComponents: z.array(componentName).default([]).describe('Covered components every httpsig signature must include beside @method, @target-uri and authorization (and content-digest with a body).'),
      maxBufferedBodyBytes: number(z.number().int().min(0).max(64 * 1024 * 1024))
        .default(1_048_576)
        .describe('A request body on an httpsig request is read up to this many bytes to check its Content-Digest; a larger one is refused (413) before anything is forwarded.'),
    })
    .prefault({})
    .describe('HTTP Message Signatures (draft-richer-oauth-httpsig on RFC 9421) for routes whose methods include httpsig; experimental.');
}
