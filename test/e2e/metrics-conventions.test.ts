/**
 * The metrics an alert relies on exist before the event they count (issue 28): every labelled
 * counter whose label values are known at start is exported at 0, so `increase(...)` sees the
 * first failure; `cnfguard_shared_state_up` exists only with `sharedState`; and the names follow
 * Prometheus conventions as `promtool check metrics` reads them, the deprecated ones aside (kept
 * by default, dropped with `admin.deprecatedMetrics: false`).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { DEPRECATED_METRICS } from '../../src/admin/metrics.ts';
import { REASONS } from '../../src/oauth/reasons.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { scrape } from '../fixtures/prometheus.ts';
import { hasPromtool, lintMetrics } from '../fixtures/promtool.ts';
import { createPki, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';

const ROOT = join(import.meta.dirname, '..', '..');

let pki: Pki;
let stub: IntrospectionStub;
let upstream: EchoUpstream;

const config = (extra: Record<string, unknown> = {}, admin: Record<string, unknown> = {}) => ({
  listen: { host: '127.0.0.1', port: 0 },
  tls: { cert: pki.files.server.cert, key: pki.files.server.key },
  introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca },
  upstream: upstream.url,
  admin: { host: '127.0.0.1', port: 0, ...admin },
  routes: [{ name: 'reports', pathPrefix: '/reports', binding: 'report-only' }],
  ...extra,
});

beforeAll(async () => {
  pki = await createPki();
  stub = await startIntrospectionStub(pki.certs.server);
  upstream = await startEchoUpstream();
});

afterAll(async () => {
  await upstream?.stop();
  await stub?.stop();
  await pki?.cleanup();
});

describe('a freshly started cnfguard, before any request or reload', () => {
  let guard: Guard;
  beforeAll(async () => {
    guard = await startGuard(pki, config(), { defaultMetrics: true });
  });
  afterAll(() => guard?.stop());

  it('exports the reload results at 0', async () => {
    const metrics = await scrape(guard.started.adminUrl);
    expect(metrics.value('cnfguard_cert_reload_total', { result: 'failure' })).toBe(0);
    expect(metrics.value('cnfguard_cert_reload_total', { result: 'success' })).toBe(0);
    expect(metrics.value('cnfguard_config_reload_total', { result: 'rejected' })).toBe(0);
    expect(metrics.value('cnfguard_config_reload_total', { result: 'applied' })).toBe(0);
  });

  it('exports every decision and reason id per route at 0, and introspection outcomes', async () => {
    const metrics = await scrape(guard.started.adminUrl);
    for (const route of ['default', 'reports']) {
      for (const reason of Object.keys(REASONS).filter((r) => !['client_aborted', 'upstream_unreachable', 'upstream_timeout', 'internal_error'].includes(r))) {
        expect(metrics.value('cnfguard_requests_total', { decision: 'deny', reason, route }), `${route} ${reason}`).toBe(0);
      }
      expect(metrics.value('cnfguard_requests_total', { decision: 'error', reason: 'upstream_unreachable', route })).toBe(0);
      expect(metrics.value('cnfguard_requests_total', { decision: 'aborted', reason: 'client_aborted', route })).toBe(0);
      expect(metrics.value('cnfguard_requests_total', { decision: 'allow', reason: 'bound', route })).toBe(0);
    }
    // would_deny only where report-only can produce it.
    expect(metrics.value('cnfguard_requests_total', { decision: 'would_deny', reason: 'certificate_mismatch', route: 'reports' })).toBe(0);
    expect(metrics.value('cnfguard_requests_total', { decision: 'would_deny', reason: 'certificate_mismatch', route: 'default' })).toBeUndefined();
    for (const outcome of ['active', 'inactive', 'timeout', 'network_error', 'misconfigured', 'circuit_open']) {
      expect(metrics.value('cnfguard_introspection_requests_total', { outcome }), outcome).toBe(0);
    }
    expect(metrics.value('cnfguard_token_cache_hits_total', { tier: 'local' })).toBe(0);
  });

  it('has no cnfguard_shared_state_up without sharedState (a 0 would read as "store down")', async () => {
    const metrics = await scrape(guard.started.adminUrl);
    expect(metrics.names.has('cnfguard_shared_state_up')).toBe(false);
    expect(metrics.value('cnfguard_token_cache_hits_total', { tier: 'shared' })).toBeUndefined();
  });

  it('exports the expiry under its conventional name, and the old name beside it', async () => {
    const metrics = await scrape(guard.started.adminUrl);
    const expiry = metrics.value('cnfguard_certificate_not_after_timestamp_seconds');
    expect(expiry).toBeGreaterThan(Date.now() / 1000);
    expect(metrics.value('cnfguard_certificate_not_after_seconds')).toBe(expiry);
  });

  it('counts a rejected config reload', async () => {
    const { writeFileSync, readFileSync } = await import('node:fs');
    const good = readFileSync(guard.configFile, 'utf8');
    writeFileSync(guard.configFile, 'workers: lots\n');
    try {
      expect((await guard.app.reload()).config).toBe('rejected');
    } finally {
      writeFileSync(guard.configFile, good);
    }
    expect((await scrape(guard.started.adminUrl)).value('cnfguard_config_reload_total', { result: 'rejected' })).toBe(1);
  });

  it.skipIf(!hasPromtool)('promtool check metrics flags nothing but the documented deprecated names', async () => {
    const text = await (await fetch(`${guard.started.adminUrl}/metrics`)).text();
    const flagged = lintMetrics(text).map((line) => line.split(' ')[0]);
    expect(flagged.length).toBeGreaterThan(0); // the deprecated gauges named _total are exported by default
    for (const name of flagged) expect(Object.keys(DEPRECATED_METRICS), `${name} is flagged by promtool`).toContain(name);
  });
});

describe('docs/metrics.md', () => {
  let guard: Guard;
  beforeAll(async () => {
    guard = await startGuard(pki, config(), { defaultMetrics: true });
  });
  afterAll(() => guard?.stop());

  it('names every family cnfguard exports, every deprecated name with its replacement, and every shipped alert', async () => {
    const doc = readFileSync(join(ROOT, 'docs', 'metrics.md'), 'utf8');
    const own = [...(await scrape(guard.started.adminUrl)).types.keys()].filter((name) => !/^cnfguard_(process|nodejs)_/.test(name));
    expect(own.length).toBeGreaterThan(15);
    for (const name of [...own, 'cnfguard_shared_state_up']) expect(doc, name).toContain(`\`${name}\``);
    for (const [old, replacement] of Object.entries(DEPRECATED_METRICS)) expect(doc).toMatch(new RegExp(`\\| \`${old}\` \\| \`${replacement.replace(/[()]/g, '\\$&')}\` \\|`));
    const alerts = (parseYaml(readFileSync(join(ROOT, 'deploy', 'prometheus', 'alerts.yaml'), 'utf8')) as { groups: { rules: { alert: string }[] }[] }).groups.flatMap((g) => g.rules.map((r) => r.alert));
    for (const alert of alerts) expect(doc, alert).toContain(`| \`${alert}\` |`);
  });
});

describe.skipIf(!hasPromtool)('admin.deprecatedMetrics: false', () => {
  let guard: Guard;
  beforeAll(async () => {
    guard = await startGuard(pki, config({}, { deprecatedMetrics: false }), { defaultMetrics: true });
  });
  afterAll(() => guard?.stop());

  it('promtool check metrics is clean, and the deprecated names are gone', async () => {
    const text = await (await fetch(`${guard.started.adminUrl}/metrics`)).text();
    expect(lintMetrics(text)).toEqual([]);
    for (const name of Object.keys(DEPRECATED_METRICS)) expect(text).not.toContain(`\n${name} `);
    expect(text).toContain('\ncnfguard_certificate_not_after_timestamp_seconds ');
  });
});
