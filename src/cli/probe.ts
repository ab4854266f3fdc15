/**
 * `cnfguard check --probe`: after the config passes `check`, one probe each of what cnfguard
 * depends on, in parallel, each within its configured timeout: the AS (an introspection of a random
 * dummy token, as the start-up probe does), the JWKS (when `jwt` is set), the shared store (a
 * connection and a PING, when `sharedState` is set) and every distinct upstream (as
 * `/readyz?upstream=1` checks one: admin/upstream-check.ts). Each line names the target, and on
 * failure the cause and the fix, by config key (introspection/explain.ts's table for the AS and
 * the JWKS). Never prints a token, secret or answer body.
 */
// Static imports (this module is itself loaded only for --probe): each module imported dynamically
// is an entry of the build, and these are the server's too, which esbuild would then split into
// more chunks for `run` to load (see run-proxy.ts).
import { createUpstreamCheck } from '../admin/upstream-check.ts';
import { asClientSettings } from '../compose/introspection.ts';
import { redisTargetOf } from '../compose/shared-state.ts';
import type { LoadedConfig } from '../config/load.ts';
import type { Settings } from '../config/schema.ts';
import { createIntrospectionClient } from '../introspection/client.ts';
import { explainIntrospectionFailure } from '../introspection/explain.ts';
import { RedisKv } from '../state/redis-kv.ts';
import { createHttpJwksFetch } from '../validation/jwt.ts';

export interface ProbeLine {
  /** `introspection`, `jwks`, `shared state`, `upstream` (with the route). */
  what: string;
  /** The URL probed, without userinfo. */
  target: string;
  ok: boolean;
  /** ok: what answered; failed: the cause (an error code or a status). */
  detail: string;
  /** Failed: what to check, by config key. */
  fix?: string;
}

function shown(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = '';
    parsed.password = parsed.password === '' ? '' : '****';
    return parsed.toString();
  } catch {
    return url;
  }
}

function usesIntrospection(settings: Settings): boolean {
  return settings.validation !== 'jwt' || settings.routes.some((route) => (route.validation ?? settings.validation) !== 'jwt');
}

async function probeAuthorizationServer(config: LoadedConfig): Promise<ProbeLine> {
  const client = createIntrospectionClient({ ...asClientSettings(config), keepClaims: false });
  try {
    const result = await client.probe();
    return result.ok
      ? { what: 'introspection', target: client.shownUrl, ok: true, detail: `answered in ${Math.round(result.ms)} ms` }
      : { what: 'introspection', target: client.shownUrl, ok: false, detail: result.cause, fix: result.check };
  } finally {
    await client.close();
  }
}

/** The transport error code of a failed fetch (undici puts it on the cause). */
function errorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  const code = e.cause?.code ?? e.code;
  return typeof code === 'string' ? code : undefined;
}

async function probeJwks(config: LoadedConfig, jwt: NonNullable<Settings['jwt']>): Promise<ProbeLine> {
  const timeoutMs = jwt.timeoutMs ?? config.settings.introspection.timeoutMs;
  const http = createHttpJwksFetch({ url: jwt.jwksUri, ca: config.introspection.ca, timeoutMs, maxBytes: jwt.maxJwksBytes });
  const line = { what: 'jwks', target: shown(jwt.jwksUri) };
  // The AS's table, said of jwt.jwksUri (the JWKS is trusted like the AS: introspection.ca).
  const failed = (failure: Parameters<typeof explainIntrospectionFailure>[0]): ProbeLine => {
    const { cause, check } = explainIntrospectionFailure(failure);
    return { ...line, ok: false, detail: cause, fix: check.replaceAll('introspection.url', 'jwt.jwksUri').replace(/ \(authMethod tls_client_auth, introspection\.cert and key\)/, '') };
  };
  try {
    const document = (await http.fetch()) as { keys?: unknown };
    const keys = Array.isArray(document?.keys) ? document.keys.length : 0;
    if (keys === 0) return { ...line, ok: false, detail: 'no keys', fix: 'jwt.jwksUri answered, but not with a JWK Set holding keys: is it the AS\'s jwks_uri?' };
    return { ...line, ok: true, detail: `${keys} key${keys === 1 ? '' : 's'}` };
  } catch (err) {
    const status = /HTTP (\d{3})/.exec((err as Error).message)?.[1];
    if (status !== undefined) return failed({ kind: 'status', status: Number(status) });
    const code = errorCode(err);
    if ((err as Error).name === 'TimeoutError' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ABORT_ERR') return failed({ kind: 'timeout' });
    if (code !== undefined) return failed({ kind: 'transport', code });
    return failed({ kind: 'answer', detail: (err as Error).message });
  } finally {
    await http.close();
  }
}

/** What to check when the shared store does not answer, by how it failed. */
function sharedStateFix(cause: string, key: string): string {
  if (cause === 'ECONNREFUSED') return `nothing listens at ${key}: the store is down, or the host or port is wrong`;
  if (cause === 'ENOTFOUND' || cause === 'EAI_AGAIN') return `the host of ${key} does not resolve`;
  if (cause === 'timeout') return 'no answer within sharedState.timeoutMs: the store is down or unreachable (a firewall?)';
  if (/NOAUTH|WRONGPASS|ERR AUTH/i.test(cause)) return 'the store wants a password: put it in sharedState.url (redis://:password@host) or check it';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_SSL|EPROTO/.test(cause)) return "check sharedState.ca and the scheme (rediss:// is TLS): the store's certificate does not chain to it";
  return `${key} could not be used: see the cause`;
}

async function probeSharedState(config: LoadedConfig, shared: NonNullable<Settings['sharedState']>): Promise<ProbeLine> {
  const key = shared.sentinel !== undefined ? 'sharedState.sentinel.nodes' : shared.cluster !== undefined ? 'sharedState.cluster.nodes' : 'sharedState.url';
  const line = { what: 'shared state', target: shared.url !== undefined ? shown(shared.url) : (shared.sentinel?.nodes ?? shared.cluster?.nodes ?? []).join(', ') };
  const kv = new RedisKv({ target: redisTargetOf(shared, config.sharedState ?? {}), password: config.sharedState?.password, ca: config.sharedState?.ca, timeoutMs: Math.max(1000, shared.timeoutMs) });
  // ioredis would reconnect for ever: one attempt, one error.
  kv.redis.options.retryStrategy = () => null;
  let lastError: Error | undefined;
  kv.redis.on('error', (err: Error) => (lastError = err));
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), Math.max(1000, shared.timeoutMs))));
  try {
    await Promise.race([kv.redis.connect().then(() => kv.redis.ping()), deadline]);
    return { ...line, ok: true, detail: 'PONG' };
  } catch (err) {
    const cause = errorCode(lastError) ?? errorCode(err) ?? (lastError ?? (err as Error)).message;
    return { ...line, ok: false, detail: cause, fix: sharedStateFix(cause, key) };
  } finally {
    clearTimeout(timer);
    kv.close();
  }
}

/** What to check when an upstream does not answer; `key` is where its URL is configured. */
function upstreamFix(detail: string, key: string): string {
  const code = /^down \(([A-Z_]+)\)$/.exec(detail)?.[1];
  if (code === 'ECONNREFUSED') return `nothing listens at ${key}: start the service, or fix the host or port`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `the host of ${key} does not resolve`;
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `no route to the host of ${key}`;
  if (detail.includes('within')) return `no answer from ${key} within admin.upstreamCheck.timeoutMs: the service is down, or a firewall drops packets`;
  if (detail.includes('HTTP')) return `the service answers admin.upstreamCheck.path with an error: see its logs`;
  return `${key} could not be reached`;
}

async function probeUpstreams(settings: Settings): Promise<ProbeLine[]> {
  // Each distinct URL once, named by the first key that configures it.
  const targets = new Map<string, { key: string; route: string }>();
  targets.set(settings.upstream, { key: 'upstream', route: 'default' });
  settings.routes.forEach((route, index) => {
    if (route.upstream !== undefined && !targets.has(route.upstream)) targets.set(route.upstream, { key: `routes[${index}].upstream`, route: route.name ?? `routes[${index}]` });
  });
  const { path, timeoutMs } = settings.admin.upstreamCheck;
  return Promise.all(
    [...targets].map(async ([url, { key, route }]) => {
      // admin.upstreamCheck.path is the default upstream's health path; routes get a TCP connect.
      const result = await createUpstreamCheck({ upstream: () => url, path: key === 'upstream' ? path : undefined, timeoutMs })();
      const line = { what: `upstream (${route})`, target: shown(url) };
      return result.ok ? { ...line, ok: true, detail: result.detail.replace(/^ok \((.*)\)$/, '$1') } : { ...line, ok: false, detail: result.detail.replace(/^down \((.*)\)$/, '$1'), fix: upstreamFix(result.detail, key) };
    }),
  );
}

/** Every probe the config calls for, in a fixed order: AS, JWKS, shared store, upstreams. */
export async function probeDependencies(config: LoadedConfig): Promise<ProbeLine[]> {
  const { settings } = config;
  const lines = await Promise.all([
    usesIntrospection(settings) ? probeAuthorizationServer(config) : undefined,
    settings.jwt === undefined ? undefined : probeJwks(config, settings.jwt),
    settings.sharedState === undefined ? undefined : probeSharedState(config, settings.sharedState),
    probeUpstreams(settings),
  ]);
  return lines.flat().filter((line): line is ProbeLine => line !== undefined);
}

export function formatProbeLine(line: ProbeLine): string {
  return line.ok ? `probe ok:     ${line.what} ${line.target}: ${line.detail}\n` : `probe FAILED: ${line.what} ${line.target}: ${line.detail}; fix: ${line.fix ?? 'see the cause'}\n`;
}

/** Probes, writes one line each, and returns the exit code: 0 when every one answered, 1 otherwise. */
export async function runProbe(config: LoadedConfig, write: (text: string) => void): Promise<number> {
  const lines = await probeDependencies(config);
  for (const line of lines) write(formatProbeLine(line));
  const failed = lines.filter((line) => !line.ok).length;
  write(failed === 0 ? `probe: all ${lines.length} answered\n` : `probe: ${failed} of ${lines.length} did not answer\n`);
  return failed === 0 ? 0 : 1;
}
