/**
 * `cnfguard explain -c FILE --token T ...`: the real pipeline, once, on a request built from the
 * options, with the configured introspection and JWKS called live; prints each step's outcome, the
 * token's `cnf` against the presented proofs and the answer a client would get (explain-report.ts).
 * Exit 0 allowed, 1 refused, 2 could not evaluate.
 *
 * Nothing is shared with a running cnfguard: no shared store (a DPoP proof's jti is remembered in
 * this process only), no listener, no metrics exported. The token is read from the options or a
 * file and never printed; logs (warnings only) go to stderr.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { createMetrics } from '../admin/metrics.ts';
import { buildIntrospection } from '../compose/introspection.ts';
import { createAssertionKeyRing } from '../assertion/keys.ts';
import { createJwksDirectory } from '../compose/jwks.ts';
import { buildValidator } from '../compose/jwt.ts';
import { buildDpopState } from '../compose/shared-state.ts';
import { ConfigError } from '../config/problems.ts';
import { loadConfigFile, type LoadedConfig } from '../config/load.ts';
import { createLogger } from '../log.ts';
import { createCertificateSource, type ClientCertificate } from '../pipeline/client-cert.ts';
import { recordingObserver } from '../pipeline/observer.ts';
import type { RequestFacts } from '../pipeline/pipeline.ts';
import { buildRuntime } from '../runtime.ts';
import { splitPemCertificates } from '../tls/certificates.ts';
import { buildReport, formatReport } from './explain-report.ts';
import { EXPLAIN_USAGE } from './explain-usage.ts';


class ExplainUsageError extends Error {}

interface ExplainOptions {
  config: string;
  token: string;
  cert: string | undefined;
  method: string;
  /** Undefined: publicOrigin, else https://localhost/ (known once the config is read). */
  url: URL | undefined;
  dpop: string | undefined;
  headers: [string, string][];
  json: boolean;
}

function optionsOf(args: string[], env: NodeJS.ProcessEnv): ExplainOptions {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      config: { type: 'string', short: 'c' },
      token: { type: 'string' },
      'token-file': { type: 'string' },
      cert: { type: 'string' },
      method: { type: 'string' },
      url: { type: 'string' },
      dpop: { type: 'string' },
      header: { type: 'string', multiple: true },
      json: { type: 'boolean' },
    },
  });
  const config = values.config ?? env.CNFGUARD_CONFIG;
  if (config === undefined || config === '') throw new ExplainUsageError('--config FILE (or CNFGUARD_CONFIG) is required');
  if ((values.token === undefined) === (values['token-file'] === undefined)) throw new ExplainUsageError('exactly one of --token and --token-file is required');
  const token = (values.token ?? readFileSync(values['token-file'] as string, 'utf8')).trim();
  if (token === '') throw new ExplainUsageError('the token is empty');
  let url: URL | undefined;
  try {
    url = values.url === undefined ? undefined : new URL(values.url);
  } catch {
    throw new ExplainUsageError('--url: not an absolute URL');
  }
  const headers = (values.header ?? []).map((line, index): [string, string] => {
    const colon = line.indexOf(':');
    // Not echoed: a header value may be a credential.
    if (colon <= 0) throw new ExplainUsageError(`--header number ${index + 1}: expected 'Name: value'`);
    return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
  });
  return { config, token, cert: values.cert, method: (values.method ?? 'GET').toUpperCase(), url, dpop: values.dpop, headers, json: values.json === true };
}

/** The presented certificate as the edge would judge it: its thumbprint, and whether it chains to tls.clientCa. */
function certificateOf(file: string, config: LoadedConfig): ClientCertificate | undefined {
  const pem = splitPemCertificates(readFileSync(file, 'utf8'))[0];
  if (pem === undefined) throw new ExplainUsageError(`--cert ${file}: no PEM certificate in it`);
  // Through the same certificate source as a trusted proxy's header, so that tls.clientCa is applied as at the edge.
  const peer = '192.0.2.1';
  const source = createCertificateSource({ trustedProxies: [{ cidrs: [`${peer}/32`], header: 'x-explain-cert', format: 'pem-urlencoded', xfccElement: 'last' }], clientCa: config.tls.clientCa });
  return source.certificateOf({ socket: undefined, peerAddress: peer, headerLines: (name) => (name === 'x-explain-cert' ? [encodeURIComponent(pem)] : undefined) });
}

function factsOf(options: ExplainOptions & { url: URL }, certificate: ClientCertificate | undefined): RequestFacts {
  const lines = (name: string) => options.headers.filter(([n]) => n === name).map(([, v]) => v);
  const scheme = options.dpop === undefined ? 'Bearer' : 'DPoP';
  const dpop = [...(options.dpop === undefined ? [] : [options.dpop]), ...lines('dpop')];
  const host = lines('host');
  return {
    method: options.method,
    target: `${options.url.pathname}${options.url.search}`,
    hostLines: host.length > 0 ? host : [options.url.host],
    headerCount: options.headers.length + 2 + (options.dpop === undefined ? 0 : 1),
    authorization: [`${scheme} ${options.token}`, ...lines('authorization')],
    dpop: dpop.length === 0 ? undefined : dpop,
    peer: '127.0.0.1',
    certificate,
    certificateError: undefined,
    body: { declaredLength: undefined, chunked: false, form: false },
  };
}

/** Runs the command; returns the exit code. Output goes to `out`, problems to `err`. */
export async function explainCommand(args: string[], io: { out: (text: string) => void; err: (text: string) => void; env?: NodeJS.ProcessEnv } = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) }): Promise<number> {
  let options: ExplainOptions & { url: URL };
  let config: LoadedConfig;
  let certificate: ClientCertificate | undefined;
  try {
    const given = optionsOf(args, io.env ?? process.env);
    config = loadConfigFile(given.config);
    options = { ...given, url: given.url ?? new URL(config.settings.publicOrigin ?? 'https://localhost/') };
    certificate = options.cert === undefined ? undefined : certificateOf(options.cert, config);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof ExplainUsageError || (err as NodeJS.ErrnoException).code !== undefined) {
      io.err(`cnfguard explain: ${(err as Error).message}\n${err instanceof ExplainUsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS') === true ? EXPLAIN_USAGE : ''}`);
      return 2;
    }
    throw err;
  }
  const { settings } = config;
  const now = Date.now;
  const logger = createLogger('warn', pino.destination({ fd: 2, sync: true }));
  const metrics = createMetrics({ defaultMetrics: false });
  const io2 = { metrics, logger, now };
  const jwks = createJwksDirectory(config, { ...io2, fetchJwks: undefined });
  const { client, tokens } = buildIntrospection(config, { ...io2, introspect: undefined, store: undefined, jwks });
  const { validator } = buildValidator(config, { ...io2, tokens, jwks });
  try {
    // A JWKS that cannot be fetched is the validation step's refusal (jwks_unavailable: exit 2), not a crash.
    await jwks.refreshAll().catch(() => false);
    const dpop = buildDpopState(config, { store: undefined, metrics, now });
    // The assertion the upstream would get is signed with the configured key, as `run` would.
    const assertionKeys = createAssertionKeyRing(now);
    assertionKeys.use(config.assertionKey, 0);
    const runtime = buildRuntime(settings, { assertionKeys, validator, replayStore: dpop.replayStore, nonces: dpop.nonces, now });
    const observer = recordingObserver();
    const verdict = await runtime.pipeline.evaluate(factsOf(options, certificate), () => Promise.resolve({ kind: 'read', bytes: Buffer.alloc(0) }), observer);
    const report = buildReport({ token: options.token, method: options.method, url: options.url.href, verdict, steps: observer.steps, realm: runtime.realm, certificateThumbprint: certificate?.thumbprint });
    io.out(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
    return report.exit;
  } finally {
    await client?.close();
    await jwks.close();
  }
}
