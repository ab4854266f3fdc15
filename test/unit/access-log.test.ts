import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/admin/metrics.ts';
import { createLogger } from '../../src/log.ts';
import { accessLine, createAccessLog, entryOf, outcomeOf, type FinishedRequest } from '../../src/observe/access-log.ts';
import { GuardError } from '../../src/edge/render.ts';
import type { Decision } from '../../src/pipeline/decide.ts';
import type { Verdict } from '../../src/pipeline/pipeline.ts';
import { compileRoutes } from '../../src/pipeline/route.ts';
import { minimalSettings } from '../fixtures/config.ts';

const route = compileRoutes(minimalSettings()).fallback;
const identity = { subject: 'alice', clientId: 'app', scope: 'read', certificate: undefined, claims: {} };
const verdictOf = (decision: Decision): Verdict => ({ route, decision, target: '/x', host: 'h', body: { kind: 'as-received' }, closeConnection: false, scheme: 'bearer' });
const allowed = verdictOf({ allow: true, reason: 'bound', identity });

describe('outcomeOf', () => {
  it.each<[string, Verdict | undefined, GuardError | undefined, string, string, string]>([
    ['allowed', allowed, undefined, 'allow', 'bound', 'info'],
    ['denied', verdictOf({ allow: false, error: new GuardError('certificate_mismatch') }), undefined, 'deny', 'certificate_mismatch', 'info'],
    ['report-only', verdictOf({ allow: true, reason: 'report_only', identity, wouldDeny: new GuardError('token_unbound') }), undefined, 'would_deny', 'token_unbound', 'warn'],
    ['upstream down after allow', allowed, new GuardError('upstream_unreachable'), 'error', 'upstream_unreachable', 'info'],
    ['upstream slow after allow', allowed, new GuardError('upstream_timeout'), 'error', 'upstream_timeout', 'info'],
    ['chunked body over the limit after allow', allowed, new GuardError('body_too_large'), 'deny', 'body_too_large', 'info'],
    ['client went away after allow', allowed, new GuardError('client_aborted'), 'aborted', 'client_aborted', 'info'],
    ['parser refusal', undefined, new GuardError('http_malformed'), 'deny', 'http_malformed', 'info'],
    ['internal error', allowed, new GuardError('internal_error'), 'error', 'internal_error', 'info'],
  ])('%s', (_name, verdict, failure, decision, reason, level) => {
    expect(outcomeOf({ verdict, failure })).toMatchObject({ decision, reason, level });
  });
});

function capture() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(chunk.toString());
      callback();
    },
  });
  return { lines, logger: createLogger('info', stream) };
}

describe('accessLine', () => {
  it('writes what pino would write for the same fields', async () => {
    const fields: [string, string | number | undefined][] = [
      ['reqId', 'r-1'],
      ['path', '/a"b\\c\u0001é'],
      ['status', 200],
      ['skipped', undefined],
      ['latencyMs', 1.25],
    ];
    const ours = capture();
    const theirs = capture();
    ours.lines.push(accessLine(ours.logger, 'warn', fields.flat(), 'report-only: would deny'));
    theirs.logger.warn(Object.fromEntries(fields.filter(([, v]) => v !== undefined)), 'report-only: would deny');
    await new Promise((resolve) => setImmediate(resolve));
    const strip = (line: string) => ({ ...JSON.parse(line), time: undefined });
    expect(strip(ours.lines[0] as string)).toEqual(strip(theirs.lines[0] as string));
    expect(ours.lines[0]).toMatch(/\n$/);
    expect(Object.keys(JSON.parse(ours.lines[0] as string))).toEqual(Object.keys(JSON.parse(theirs.lines[0] as string)));
  });
});

describe('createAccessLog', () => {
  const request = (overrides: Partial<FinishedRequest> = {}): FinishedRequest => ({
    requestId: 'r',
    method: 'GET',
    path: '/x',
    status: 200,
    verdict: allowed,
    failure: undefined,
    upstreamStatus: 200,
    thumbprint: undefined,
    latencyMs: 1,
    ...overrides,
  });

  it('counts every request once, and logs it unless its level is off', async () => {
    const { lines, logger } = capture();
    const metrics = createMetrics({ defaultMetrics: false });
    const log = createAccessLog(logger, metrics);
    log.record(request());
    log.record(request({ status: 499, failure: new GuardError('client_aborted') }));
    logger.level = 'warn';
    log.record(request());
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.map((line) => JSON.parse(line).decision)).toEqual(['allow', 'aborted']);
    const counted = await metrics.registry.getSingleMetricAsString('cnfguard_requests_total');
    expect(counted).toContain('cnfguard_requests_total{decision="allow",reason="bound",route="default"} 2');
    expect(counted).toContain('cnfguard_requests_total{decision="aborted",reason="client_aborted",route="default"} 1');
  });

  it("names the token's client on allowed requests, and on denials once the token was validated", () => {
    const outcome = outcomeOf({ verdict: allowed, failure: undefined });
    expect(Object.fromEntries(entryOf(request(), outcome)).clientId).toBe('app');
    const denied = { ...verdictOf({ allow: false, error: new GuardError('certificate_mismatch') }), clientId: 'thief-app' };
    expect(Object.fromEntries(entryOf(request({ verdict: denied }), outcomeOf({ verdict: denied, failure: undefined }))).clientId).toBe('thief-app');
    const unvalidated = verdictOf({ allow: false, error: new GuardError('credentials_missing') });
    expect(Object.fromEntries(entryOf(request({ verdict: unvalidated }), outcomeOf({ verdict: unvalidated, failure: undefined }))).clientId).toBeUndefined();
  });

  it('writes the level as a word, as the logger writes its other lines', async () => {
    const { lines, logger } = capture();
    const log = createAccessLog(logger, createMetrics({ defaultMetrics: false }));
    log.record(request({ client: '192.0.2.7', forwardedFor: '198.51.100.1', bytesIn: 120, bytesOut: 345 }));
    log.record(request({ verdict: verdictOf({ allow: true, reason: 'report_only', identity, wouldDeny: new GuardError('token_unbound') }) }));
    logger.info('other');
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.map((line) => JSON.parse(line).level)).toEqual(['info', 'warn', 'info']);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ client: '192.0.2.7', forwardedFor: '198.51.100.1', host: 'h', bytesIn: 120, bytesOut: 345 });
  });
});
