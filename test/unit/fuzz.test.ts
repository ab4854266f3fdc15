/**
 * Parser fuzzing (issue 6, item 4): whatever a client, a front proxy, an operator's environment or
 * an authorization server sends, the parsers answer with a value or their own typed error, never
 * anything else. A few thousand generated cases in all; fixed seeds are not used, so every run
 * explores new inputs (fast-check prints the seed and the shrunk counterexample on failure).
 *
 * The per-format property tests of the forwarded-certificate parsers live in
 * forwarded-certificate.test.ts; here they are driven through the request-level path instead
 * (`createCertificateSource`: trust boundary, header deletion, caching, GuardError mapping).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { ConfigError, interpolate, loadConfigObject, parseConfigText, type ConfigProblem, type Environment } from '../../src/config/load.ts';
import { InvalidIntrospectionAnswer, tokenInfoFromAnswer } from '../../src/introspection/token-info.ts';
import { GuardError, REASONS } from '../../src/edge/render.ts';
import { createCertificateSource, type ClientCertificate, type TrustedProxy } from '../../src/pipeline/client-cert.ts';
import { credentialsFrom } from '../../src/pipeline/token.ts';
import { createSelfSignedClientCertificate, generateDevCertificates } from '../../src/tls/dev-certs.ts';
import { FORWARDED_CERTIFICATE_FORMATS, type ForwardedCertificateFormat } from '../../src/tls/forwarded-certificate.ts';
import { minimalConfig } from '../fixtures/config.ts';
import { loadCertificate, type TestCertificate } from '../fixtures/certificate.ts';

/** RFC 6750 §2.1 b64token. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const B64TOKEN_CHARS = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/='];
/** Characters that have broken header parsers before: line ends, NUL, separators, quotes, non-ASCII spaces, astral characters. */
const HOSTILE = ['\r', '\n', '\r\n', '\0', '\t', ' ', '  ', ',', ';', '"', '\\', '=', ':', '\u00a0', '\u2028', '\u200b', '\ufeff', 'é', '\u{1f600}', '\ud800', '%00', '%0d%0a'];

/** fast-check runs per property; the whole file stays a few thousand cases. `FUZZ_RUNS=20000` for a deep run by hand. */
const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

// ---------------------------------------------------------------------------------------------
// (a) Authorization header

describe('fuzz: Authorization header (credentialsFrom)', () => {
  const scheme = fc.constantFrom('Bearer', 'bearer', 'BEARER', 'bEaReR', 'Bearer ', 'Bearer  ', 'Bearer\t', 'Basic', 'DPoP', 'DPoP ', 'dpop  ', 'Negotiate', 'Bear', 'Bearerx', '', ' ', '\t', ',Bearer', '"Bearer');
  const tokenish = fc.array(fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...B64TOKEN_CHARS) }, { weight: 1, arbitrary: fc.constantFrom(...HOSTILE) }), { maxLength: 40 }).map((parts) => parts.join(''));
  const built = fc
    .tuple(fc.constantFrom('', ' ', '\t', ' \t'), scheme, fc.constantFrom('', ' ', '  ', '\t', ...HOSTILE), tokenish, fc.constantFrom('', ' ', '\t', ...HOSTILE))
    .map((parts) => parts.join(''));
  const value = fc.oneof(fc.string({ unit: 'binary', maxLength: 80 }), fc.string({ unit: 'grapheme', maxLength: 40 }), built);
  const header = fc.oneof(fc.constant(undefined), fc.array(value, { maxLength: 3 }), value.map((v) => [v]), built.map((v) => [v]));

  it('returns a b64token taken from the single value, or throws a GuardError 400/401, nothing else', () => {
    fc.assert(
      fc.property(header, (authorization) => {
        let token: string;
        try {
          ({ token } = credentialsFrom(authorization));
        } catch (err) {
          expect(err).toBeInstanceOf(GuardError);
          expect([400, 401]).toContain((err as GuardError).status);
          // No credentials at all is the only 401 here (RFC 6750 §3.1: no error code).
          if ((err as GuardError).status === 401) expect((err as GuardError).reason).toBe('credentials_missing');
          return;
        }
        expect(token).toMatch(B64TOKEN);
        expect(authorization).toHaveLength(1);
        expect(authorization?.[0]).toContain(token);
        // The only thing around the token is the scheme, spaces and optional whitespace.
        // (The token is cut from the end: `bEaReR E` holds the token `E` inside its scheme too.)
        const value = authorization?.[0] ?? '';
        const end = value.lastIndexOf(token);
        expect(value.slice(0, end) + value.slice(end + token.length)).toMatch(/^[ \t]*(bearer|dpop) +[ \t]*$/i);
      }),
      { numRuns: RUNS * 2 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// (b) Forwarded certificates through the request-level path


const load = loadCertificate;

let caPem: string;
let certs: TestCertificate[] = [];
/** Files for the config fuzzing: a valid server pair and CA, plus an unreadable path. */
let dir: string;
let files: { cert: string; key: string; ca: string; missing: string };

beforeAll(() => {
  const dev = generateDevCertificates();
  caPem = dev.ca.cert;
  certs = [dev.clients.client1.cert, dev.clients.client2.cert, createSelfSignedClientCertificate('fuzz "self", signed;=').cert, dev.ca.cert].map(load);
  dir = mkdtempSync(join(tmpdir(), 'cnfguard-fuzz-'));
  files = { cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), ca: join(dir, 'ca.crt'), missing: join(dir, 'missing.pem') };
  writeFileSync(files.cert, dev.server.cert);
  writeFileSync(files.key, dev.server.key, { mode: 0o600 });
  writeFileSync(files.ca, dev.ca.cert);
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

const HEADER_OF: Record<ForwardedCertificateFormat, string> = {
  xfcc: 'x-forwarded-client-cert',
  rfc9440: 'client-cert',
  'pem-urlencoded': 'x-client-cert',
  'base64-der': 'x-forwarded-tls-client-cert',
  'sha256-hex': 'cloudfront-viewer-cert-sha256',
};

/** What each front proxy would send for a certificate, so generated values also reach the success paths. */
function encode(format: ForwardedCertificateFormat, cert: TestCertificate): string {
  switch (format) {
    case 'xfcc':
      return `By=spiffe://edge;Hash=${cert.hex};Cert="${encodeURIComponent(cert.pem.replace(/\r\n/g, '\n'))}";Subject="CN=x"`;
    case 'rfc9440':
      return `:${cert.der.toString('base64')}:`;
    case 'pem-urlencoded':
      return encodeURIComponent(cert.pem);
    case 'base64-der':
      return cert.der.toString('base64');
    case 'sha256-hex':
      return cert.hex;
  }
}

const TRUSTED_PEER = fc.constantFrom('10.1.2.3', '::ffff:10.9.8.7', 'fd00::1', '10.255.255.255');
const UNTRUSTED_PEER = fc.constantFrom(undefined, '192.0.2.1', '::1', '11.0.0.1', 'fe80::1%eth0', 'not an address', '::ffff:192.0.2.1');

describe('fuzz: forwarded certificate headers through createCertificateSource', () => {
  const syntax = fc.constantFrom(...'abAB09+/=%:;,"\\ \t-_'.split(''), 'Hash=', 'Cert="', 'Chain="', 'By=', ':MII', '-----BEGIN CERTIFICATE-----', '-----END CERTIFICATE-----', '%0A', '%2B', ...HOSTILE);
  const syntaxy = fc.array(syntax, { maxLength: 40 }).map((parts) => parts.join(''));

  /** A header value for `format`: arbitrary, syntax-shaped, a real encoding, or a real encoding with noise spliced in. */
  function valueFor(format: ForwardedCertificateFormat): fc.Arbitrary<string> {
    const real = fc.integer({ min: 0, max: 3 }).map((i) => encode(format, certs[i]!));
    const spliced = fc.tuple(real, fc.nat(), fc.nat({ max: 20 }), syntaxy).map(([v, at, cut, noise]) => {
      const i = at % (v.length + 1);
      return v.slice(0, i) + noise + v.slice(i + cut);
    });
    return fc.oneof(fc.string({ unit: 'binary', maxLength: 120 }), syntaxy, real, spliced);
  }

  function lines(format: ForwardedCertificateFormat): fc.Arbitrary<string[]> {
    return fc.oneof(valueFor(format).map((v) => [v]), fc.array(valueFor(format), { maxLength: 3 }));
  }

  /** Node's view of a request's headers: joined in `headers`, one entry a line in `headersDistinct`. */
  function requestHeaders(values: Record<string, string[]>): { headers: IncomingHttpHeaders; headersDistinct: NodeJS.Dict<string[]> } {
    const headers: IncomingHttpHeaders = { host: 'api.example', authorization: 'Bearer abc' };
    const headersDistinct: NodeJS.Dict<string[]> = { host: ['api.example'], authorization: ['Bearer abc'] };
    for (const [name, v] of Object.entries(values)) {
      if (v.length === 0) continue;
      headers[name] = v.join(', ');
      headersDistinct[name] = v;
    }
    return { headers, headersDistinct };
  }

  function checkCertificate(result: ClientCertificate | undefined, format: ForwardedCertificateFormat, withCa: boolean): void {
    if (result === undefined) return;
    expect(result.thumbprint).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(result.sha256Hex, 'hex').toString('base64url')).toBe(result.thumbprint);
    const known = certs.find((c) => c.thumbprint === result.thumbprint);
    if (format === 'sha256-hex' || result.subject === '') {
      // A thumbprint alone is the proxy's verified word.
      expect(result.trusted).toBe(true);
    } else if (known !== undefined && withCa) {
      // The CA-issued clients chain to the CA, the self-signed one does not.
      expect(typeof result.trusted).toBe('boolean');
      if (known === certs[2]) expect(result.trusted).toBe(false);
      if (known === certs[0] || known === certs[1]) expect(result.trusted).toBe(true);
    } else if (!withCa) {
      expect(result.trusted).toBe(true);
    }
  }

  it.each(FORWARDED_CERTIFICATE_FORMATS)('%s from a trusted peer: a certificate, undefined, or forwarded_certificate_malformed; reading changes no header', (format) => {
    const header = HEADER_OF[format];
    // Two proxies: this format, and another one. (Both headers are stripped before forwarding: upstream-headers.test.ts.)
    const other: TrustedProxy = { cidrs: ['172.16.0.0/12'], header: 'x-other-cert', format: 'sha256-hex', xfccElement: 'last' };
    const sources = [false, true].map((withCa) => ({
      withCa,
      first: createCertificateSource({ trustedProxies: [{ cidrs: ['10.0.0.0/8', 'fd00::/8'], header, format, xfccElement: 'first' }, other], clientCa: withCa ? caPem : undefined }),
      last: createCertificateSource({ trustedProxies: [{ cidrs: ['10.0.0.0/8', 'fd00::/8'], header, format, xfccElement: 'last' }, other], clientCa: withCa ? caPem : undefined }),
    }));
    fc.assert(
      fc.property(lines(format), fc.array(valueFor('sha256-hex'), { maxLength: 2 }), TRUSTED_PEER, fc.nat({ max: 3 }), fc.boolean(), (value, otherValue, peerAddress, pick, twice) => {
        const chosen = sources[pick % 2]!;
        const source = pick < 2 ? chosen.first : chosen.last;
        // Twice: the second call goes through the per-value cache.
        for (let round = 0; round < (twice ? 2 : 1); round++) {
          const { headersDistinct } = requestHeaders({ [header]: value, 'x-other-cert': otherValue });
          let result: ClientCertificate | undefined;
          try {
            result = source.certificateOf({ socket: undefined, peerAddress, headerLines: (name) => headersDistinct[name] });
          } catch (err) {
            expect(err).toBeInstanceOf(GuardError);
            expect((err as GuardError).reason).toBe('forwarded_certificate_malformed');
            expect((err as GuardError).status).toBe(400);
            // Nothing of the value reaches the client (a fixed description) or the log (header name and reason id only).
            expect((err as GuardError).description).toBe(REASONS.forwarded_certificate_malformed.description);
            expect((err as GuardError).detail).toMatch(new RegExp(`^${header}: (too_large|ambiguous|malformed_header|not_a_certificate|hash_mismatch)$`));
          }
          checkCertificate(result, format, chosen.withCa);
          // Read, never changed: the same lines go upstream or to the next check.
          expect(headersDistinct).toEqual(requestHeaders({ [header]: value, 'x-other-cert': otherValue }).headersDistinct);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('from an untrusted peer the headers are never read (no error, no certificate)', () => {
    const proxies: TrustedProxy[] = FORWARDED_CERTIFICATE_FORMATS.map((format) => ({ cidrs: ['10.0.0.0/8', 'fd00::/8'], header: HEADER_OF[format], format, xfccElement: 'last' }));
    const source = createCertificateSource({ trustedProxies: proxies, clientCa: undefined });
    const values = fc.record(Object.fromEntries(FORWARDED_CERTIFICATE_FORMATS.map((format) => [HEADER_OF[format], lines(format)])) as Record<string, fc.Arbitrary<string[]>>);
    fc.assert(
      fc.property(values, UNTRUSTED_PEER, (value, peerAddress) => {
        const { headersDistinct } = requestHeaders(value);
        expect(source.certificateOf({ socket: undefined, peerAddress, headerLines: (name) => headersDistinct[name] })).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// (c) Config interpolation, YAML text and the schema

const VAR_NAME = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,6}$/);
const ENV: fc.Arbitrary<Environment> = fc.dictionary(fc.oneof(VAR_NAME, fc.string({ maxLength: 8 })), fc.option(fc.string({ unit: 'binary', maxLength: 20 }), { nil: undefined }), { maxKeys: 6 });
const INTERPOLATED = fc
  .array(
    fc.oneof(
      fc.string({ unit: 'binary', maxLength: 10 }),
      fc.constantFrom('$', '$$', '${', '}', '${}', ':-', '${A}', '${A:-}', '${A:-x}', '${1A}', '${A:-${B}}', '$${A}', '\\${A}', '${A-x}', '${ A }'),
      VAR_NAME.map((name) => `\${${name}}`),
      fc.tuple(VAR_NAME, fc.string({ maxLength: 8 })).map(([name, fallback]) => `\${${name}:-${fallback}}`),
    ),
    { maxLength: 8 },
  )
  .map((parts) => parts.join(''));

function expectProblems(problems: ConfigProblem[]): void {
  for (const problem of problems) {
    expect(Object.keys(problem).sort()).toEqual(['message', 'path']);
    expect(typeof problem.path).toBe('string');
    expect(typeof problem.message).toBe('string');
    expect(problem.message.length).toBeGreaterThan(0);
  }
}

describe('fuzz: config interpolation', () => {
  it('interpolate returns a string; problems are {path, message} at the given path', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 60 }), INTERPOLATED), ENV, fc.string({ maxLength: 12 }), (text, env, path) => {
        const problems: ConfigProblem[] = [];
        const out = interpolate(text, env, path, problems);
        expect(typeof out).toBe('string');
        expectProblems(problems);
        for (const problem of problems) expect(problem.path).toBe(path);
        if (!text.includes('$')) expect(out).toBe(text);
      }),
      { numRuns: RUNS },
    );
  });

  it('an unresolved alias or an alias bomb is a YAML problem, not an exception', () => {
    const bomb = ['a: &a [x,x,x,x,x,x,x,x,x]', 'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]', 'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]', 'd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]'].join('\n');
    for (const text of ['a: *x', '<<: *x', bomb]) {
      const problems: ConfigProblem[] = [];
      expect(parseConfigText(text, {}, problems)).toBeUndefined();
      expect(problems.length).toBeGreaterThan(0);
    }
  });

  it('parseConfigText never throws: a value, or undefined with problems recorded', () => {
    const key = fc.constantFrom('listen', 'tls', 'upstream', 'routes', 'port', 'a', '<<', '? x', '&a', '*a', '!!binary', '__proto__');
    const yamlish = fc
      .array(fc.oneof(key, INTERPOLATED, fc.constantFrom(':', ': ', '\n', '\n  ', '- ', '[', ']', '{', '}', ',', '"', "'", '#', '|', '>', '---', '...', '%YAML 1.2', '\t', '&x ', '*x', '!!str ', '!!int ', '<<: *x')), { maxLength: 24 })
      .map((parts) => parts.join(''));
    const fromJson = fc.jsonValue({ maxDepth: 3 }).map((value) => stringify(value));
    // `yaml` warns through process.emitWarning about collection keys (`? [a]`); keep the output quiet.
    const warnings = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    onTestFinished(() => warnings.mockRestore());
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 120 }), yamlish, fromJson), ENV, (text, env) => {
        const problems: ConfigProblem[] = [];
        const raw = parseConfigText(text, env, problems);
        expectProblems(problems);
        if (raw === undefined) expect(problems.length).toBeGreaterThan(0);
        else expect(typeof raw).toBe('object');
      }),
      { numRuns: RUNS },
    );
  });

  it('loadConfigObject throws only ConfigError (with problems), whatever the object', () => {
    // Values around the real schema, so generated objects get past the first checks; file paths
    // come from a fixed set (a fuzzer must not read arbitrary paths such as /dev/zero).
    const file = fc.constantFrom('server-cert', 'server-key', 'ca', 'missing', '', 'relative/nothing.pem');
    const path = (f: string) => (f === 'server-cert' ? files.cert : f === 'server-key' ? files.key : f === 'ca' ? files.ca : f === 'missing' ? files.missing : f);
    const anything = fc.jsonValue({ maxDepth: 2 });
    const port = fc.oneof(fc.integer({ min: -1, max: 70000 }), fc.constantFrom('8443', '${PORT}', 'x', 0), anything);
    const url = fc.oneof(fc.constantFrom('https://as.example/introspect', 'http://127.0.0.1:8080', 'ftp://x', 'not a url', ''), anything);
    const config = fc.record(
      {
        listen: fc.oneof(fc.record({ host: fc.constantFrom('127.0.0.1', '::', 'x'), port }, { requiredKeys: [] }), anything),
        tls: fc.oneof(fc.record({ cert: file.map(path), key: file.map(path), clientCa: file.map(path) }, { requiredKeys: [] }), anything),
        introspection: fc.oneof(
          fc.record(
            {
              url,
              clientId: fc.oneof(fc.constant('rs'), anything),
              clientSecret: fc.oneof(fc.constant('s'), anything),
              clientSecretFile: file.map(path),
              authMethod: fc.oneof(fc.constantFrom('client_secret_basic', 'client_secret_post', 'tls_client_auth', 'none'), anything),
              ca: file.map(path),
              timeoutMs: fc.oneof(fc.integer(), anything),
              cache: fc.oneof(fc.record({ maxEntries: fc.integer(), maxTtlSeconds: fc.double(), negativeTtlSeconds: fc.integer() }, { requiredKeys: [] }), anything),
            },
            { requiredKeys: [] },
          ),
          anything,
        ),
        upstream: url,
        binding: fc.oneof(fc.constantFrom('required', 'optional', 'report-only', 'off', 'on'), anything),
        scopes: fc.oneof(fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }), anything),
        routes: fc.oneof(
          fc.array(
            fc.record(
              { pathPrefix: fc.oneof(fc.constantFrom('/', '/admin', '/admin/', 'admin', '/a/../b', '/%2e%2e'), anything), host: fc.oneof(fc.constantFrom('api.example', '*.example', '*', '*.'), anything), upstream: url, binding: fc.constantFrom('required', 'off', 'x') },
              { requiredKeys: [] },
            ),
            { maxLength: 3 },
          ),
          anything,
        ),
        trustedProxies: fc.oneof(
          fc.array(
            fc.record(
              { cidrs: fc.oneof(fc.array(fc.constantFrom('10.0.0.0/8', 'fd00::/8', '1.2.3.4', '10.0.0.0/33', 'x', '::/0'), { maxLength: 3 }), anything), header: fc.oneof(fc.constantFrom('x-client-cert', 'X-Client-Cert', 'bad header', ''), anything), format: fc.oneof(fc.constantFrom(...FORWARDED_CERTIFICATE_FORMATS, 'pem'), anything) },
              { requiredKeys: [] },
            ),
            { maxLength: 2 },
          ),
          anything,
        ),
        headers: fc.oneof(fc.dictionary(fc.constantFrom('subject', 'clientId', 'scope', 'certThumbprint', 'clientCert', 'other'), fc.oneof(fc.constantFrom('x-a', 'X-B', 'host', 'bad name', ''), anything)), anything),
        claimHeaders: fc.oneof(fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.constantFrom('claims.a', 'claims.', 'sub', ''), anything)), anything),
        workers: fc.oneof(fc.constantFrom(1, 2, 'auto', 0, -1), anything),
        logLevel: fc.oneof(fc.constantFrom('info', 'debug', 'loud'), anything),
        errors: anything,
        limits: anything,
        admin: anything,
        cnf: anything,
      },
      { requiredKeys: [] },
    );
    // The success branch is reachable with these files.
    expect(loadConfigObject(minimalConfig({ tls: { cert: files.cert, key: files.key, clientCa: files.ca } }), 'fuzz').source).toBe('fuzz');
    fc.assert(
      fc.property(fc.oneof({ weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) }, { weight: 1, arbitrary: fc.object({ maxDepth: 2 }) }, { weight: 4, arbitrary: config }), (raw) => {
        try {
          const loaded = loadConfigObject(raw, 'fuzz');
          // Accepted: then it is whole, frozen and consistent.
          expect(Object.isFrozen(loaded)).toBe(true);
          expect(loaded.tls.cert).toContain('BEGIN CERTIFICATE');
          expect(loaded.source).toBe('fuzz');
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
          expect((err as ConfigError).problems.length).toBeGreaterThan(0);
          expectProblems([...(err as ConfigError).problems]);
        }
      }),
      { numRuns: RUNS },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// (d) Introspection answers

describe('fuzz: introspection answers (tokenInfoFromAnswer)', () => {
  const claimValue = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.double(), fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -0, 1e21, '1700000000'));
  const shaped = fc.record(
    {
      active: fc.oneof({ weight: 4, arbitrary: fc.boolean() }, { weight: 1, arbitrary: fc.constantFrom('true', 1, 0, null, 'false', [], {}) }),
      scope: claimValue,
      client_id: claimValue,
      username: claimValue,
      token_type: fc.oneof(fc.constantFrom('Bearer', 'DPoP', 'N_A'), claimValue),
      exp: claimValue,
      iat: claimValue,
      nbf: claimValue,
      sub: claimValue,
      aud: fc.oneof(fc.string(), fc.array(fc.string(), { maxLength: 3 }), claimValue),
      iss: claimValue,
      jti: claimValue,
      cnf: fc.oneof(fc.dictionary(fc.constantFrom('x5t#S256', 'jkt', '__proto__', 'constructor', 'x'), claimValue), claimValue),
      extra: claimValue,
    },
    { requiredKeys: [] },
  );
  /** JSON text with prototype-ish keys, parsed the way the client parses answers. */
  const text = fc
    .array(fc.tuple(fc.constantFrom('active', 'cnf', '__proto__', 'constructor', 'toString', 'exp', 'aud', 'scope'), fc.jsonValue({ maxDepth: 2 })), { maxLength: 5 })
    .map((pairs) => JSON.parse(`{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`) as unknown);

  it('returns a TokenInfo or throws InvalidIntrospectionAnswer; only `active: true` is ever active', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.anything({ maxDepth: 2 }), shaped, text), (answer) => {
        const activeTrue = answer !== null && typeof answer === 'object' && (answer as { active?: unknown }).active === true;
        let info;
        try {
          info = tokenInfoFromAnswer(answer);
        } catch (err) {
          expect(err).toBeInstanceOf(InvalidIntrospectionAnswer);
          return;
        }
        expect(info.active).toBe(activeTrue);
        expect(Object.isFrozen(info)).toBe(true);
        expect(Array.isArray(info.aud)).toBe(true);
        for (const aud of info.aud) expect(typeof aud).toBe('string');
        if (info.exp !== undefined) expect(Number.isFinite(info.exp)).toBe(true);
        if (info.nbf !== undefined) expect(Number.isFinite(info.nbf)).toBe(true);
        for (const claim of [info.subject, info.clientId, info.scope, info.tokenType, info.iss]) expect(['string', 'undefined']).toContain(typeof claim);
        if (info.cnf !== undefined) expect(typeof info.cnf).toBe('object');
        // An inactive answer carries nothing: no claim of it can reach a header.
        if (!info.active) expect(Object.keys(info.claims)).toEqual([]);
      }),
      { numRuns: RUNS * 2 },
    );
  });
});
