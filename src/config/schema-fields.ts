/**
 * The small schemas the config is made of: text read as numbers and flags, ports, URLs, header
 * names, OAuth codes. Shared by the route policy (route-policy.ts) and the whole file (schema.ts).
 */
import { z } from 'zod';

/**
 * `${VAR}` interpolation yields text; where the schema wants a number or a boolean, text that
 * spells one is read as one (and only there: a numeric client id stays a string).
 */
export function fromText(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const text = value.trim();
  if (/^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  if (text === 'true' || text === 'false') return text === 'true';
  return value;
}
export const number = <T extends z.ZodType>(schema: T) => z.preprocess(fromText, schema);

export const port = number(z.number().int().min(0).max(65535));
export const filePath = z.string().min(1, 'a file path is required');
export const httpUrl = z.url({ protocol: /^https?$/, error: 'an http:// or https:// URL' });
export const positiveInt = number(z.number().int().positive());
export const flag = number(z.boolean());
export const BINDING_MODES = ['required', 'optional', 'report-only', 'off'] as const;
export type BindingMode = (typeof BINDING_MODES)[number];
export const bindingMode = z.enum(BINDING_MODES);

/** An OAuth error code: RFC 6749 NQSCHAR without space, so it is safe inside a challenge. */
export const oauthErrorCode = z
  .string()
  .regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'an OAuth error code: printable ASCII, no spaces, quotes or backslashes');

/** RFC 9110 token; lower-cased because Node presents header names lower-case. */
export const headerName = z
  .string()
  .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'an HTTP header name')
  .transform((name) => name.toLowerCase());

/** RFC 6749 scope-token. */
export const scopeToken = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'a scope token: no spaces, quotes or backslashes');

export const missingCertificateSchema = z.strictObject({
  code: oauthErrorCode.default('invalid_token'),
  status: number(z.number().int().min(400).max(499)).default(401),
});

export const identityHeaderOverrides = z.strictObject({
  subject: headerName.optional(),
  clientId: headerName.optional(),
  scope: headerName.optional(),
  certThumbprint: headerName.optional(),
  clientCert: headerName.optional(),
  binding: headerName.optional(),
  dpopThumbprint: headerName.optional(),
});

export const identityHeadersSchema = z.strictObject({
  subject: headerName.default('x-auth-subject'),
  clientId: headerName.default('x-auth-client-id'),
  scope: headerName.default('x-auth-scope'),
  certThumbprint: headerName.default('x-auth-cert-thumbprint'),
  clientCert: headerName.default('x-forwarded-client-cert'),
  /** Why the request was let through: bound, unbound, binding_off or report_only. */
  binding: headerName.default('x-auth-binding'),
  /** Forwarded on a DPoP success: the proof key's RFC 7638 thumbprint. */
  dpopThumbprint: headerName.default('x-auth-dpop-jkt'),
});
