/**
 * The small schemas the config is made of: text read as numbers and flags, ports, URLs, header
 * names, OAuth codes. Shared by the route policy (route-policy.ts) and the whole file (schema.ts).
 */
import * as z from 'zod';

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

/** What is wrong with a URL that did not parse: a port out of range is said as such. */
export function urlProblem(input: unknown, expected: string): string {
  const port = typeof input === 'string' ? /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*:(\d+)(?:[/?#]|$)/i.exec(input)?.[1] : undefined;
  return port !== undefined && Number(port) > 65535 ? `port ${port} is out of range (0–65535)` : expected;
}
export const BINDING_MODES = ['required', 'optional', 'report-only', 'off'] as const;
export type BindingMode = (typeof BINDING_MODES)[number];

/**
 * zod (4.6) installs a schema type's lazily derived fields (values, optin, pattern, ...) once, on a
 * prototype its instances share, with a getter made while building the type's first instance: that
 * instance's definition stays reachable for the process's life. So one small instance of each type
 * a config schema uses is made before the first one is built; otherwise a first build's pieces
 * (with its builders' closures) would stay after the load let it go (issue 32).
 */
let firstOfEachType: readonly z.ZodType[] | undefined;
function makeFirstOfEachType(): void {
  firstOfEachType ??= [z.strictObject({}), z.union([z.string(), z.number()]), z.literal(0), z.enum(['a']), z.string().optional(), z.string().default(''), z.string().prefault(''), z.preprocess(fromText, z.number())];
}

/**
 * The small schemas, built afresh for each config schema (schema.ts buildConfigSchema) and shared
 * within it, so that nothing of them outlives a load.
 */
export function fieldSchemas() {
  makeFirstOfEachType();
  const port = number(z.number().int().min(0).max(65535));
  const filePath = z.string().min(1, 'a file path is required');
  const httpUrl = z.url({ protocol: /^https?$/, error: (issue) => urlProblem(issue.input, 'an http:// or https:// URL') });
  const positiveInt = number(z.number().int().positive());
  const flag = number(z.boolean());
  const bindingMode = z.enum(BINDING_MODES);

  /** An OAuth error code: RFC 6749 NQSCHAR without space, so it is safe inside a challenge. */
  const oauthErrorCode = z
    .string()
    .regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'an OAuth error code: printable ASCII, no spaces, quotes or backslashes');

  /** RFC 9110 token; lower-cased because Node presents header names lower-case. */
  const headerName = z
    .string()
    .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'an HTTP header name')
    .transform((name) => name.toLowerCase());

  /** RFC 6749 scope-token. */
  const scopeToken = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'a scope token: no spaces, quotes or backslashes');

  const missingCertificateSchema = z.strictObject({
    code: oauthErrorCode.default('invalid_token').describe('The OAuth error code sent when a route needs a client certificate and none came.'),
    status: number(z.number().int().min(400).max(499)).default(401).describe('The HTTP status (4xx) sent with that error.'),
  }).describe('The answer to a request that presents no client certificate where one is needed.');

  const identityHeaderOverrides = z.strictObject({
    subject: headerName.optional().describe("This route's header for the token's subject (`sub`)."),
    clientId: headerName.optional().describe("This route's header for the token's client (`client_id`)."),
    scope: headerName.optional().describe("This route's header for the token's scopes."),
    certThumbprint: headerName.optional().describe("This route's header for the client certificate's x5t#S256 thumbprint."),
    clientCert: headerName.optional().describe("This route's header for the client certificate."),
    binding: headerName.optional().describe("This route's header saying why the request was let through."),
    dpopThumbprint: headerName.optional().describe("This route's header for the DPoP key's RFC 7638 thumbprint."),
  });

  const identityHeadersSchema = z.strictObject({
    subject: headerName.default('x-auth-subject').describe("Header the upstream gets with the token's subject (`sub`); a client's copy is removed."),
    clientId: headerName.default('x-auth-client-id').describe("Header the upstream gets with the token's client (`client_id`)."),
    scope: headerName.default('x-auth-scope').describe("Header the upstream gets with the token's scopes, space-separated."),
    certThumbprint: headerName.default('x-auth-cert-thumbprint').describe("Header the upstream gets with the client certificate's x5t#S256 thumbprint."),
    clientCert: headerName.default('x-forwarded-client-cert').describe('Header the upstream gets with the client certificate (URL-encoded PEM).'),
    binding: headerName.default('x-auth-binding').describe('Header saying why the request was let through: bound, unbound, binding_off or report_only.'),
    dpopThumbprint: headerName.default('x-auth-dpop-jkt').describe("Header the upstream gets on a DPoP success: the proof key's RFC 7638 thumbprint."),
  });
  return { port, filePath, httpUrl, positiveInt, flag, bindingMode, oauthErrorCode, headerName, scopeToken, missingCertificateSchema, identityHeaderOverrides, identityHeadersSchema };
}

export type FieldSchemas = ReturnType<typeof fieldSchemas>;
