/**
 * The shipped alert rules (deploy/prometheus/alerts.yaml) fire (issue 28): promtool checks and
 * unit-tests them (deploy/prometheus/alerts.test.yaml), and a real Prometheus 2.42 scrapes a real
 * cnfguard every second, evaluates the rules as shipped (no `for:` rewritten: the event rules have
 * none) and, after one reload that finds a broken certificate and a broken config file, reports
 * CnfguardCertificateReloadFailed and CnfguardConfigReloadRejected firing through /api/v1/alerts,
 * with job and instance in their labels and summaries (no Kubernetes labels here).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { startPrometheus, type PrometheusAlert, type PrometheusServer } from '../fixtures/prometheus-server.ts';
import { hasPrometheus, hasPromtool, promtool } from '../fixtures/promtool.ts';
import { createPki, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';

const RULES = join(import.meta.dirname, '..', '..', 'deploy', 'prometheus');

describe.skipIf(!hasPromtool)('promtool', () => {
  it('check rules: the shipped rules are valid', () => {
    const result = promtool(['check', 'rules', join(RULES, 'alerts.yaml')]);
    expect(result.status, result.output).toBe(0);
  });

  it('test rules: the rules unit tests pass', () => {
    const result = promtool(['test', 'rules', join(RULES, 'alerts.test.yaml')]);
    expect(result.status, result.output).toBe(0);
  });
});

describe.skipIf(!hasPrometheus)('a real Prometheus scraping a real cnfguard', () => {
  let pki: Pki;
  let stub: IntrospectionStub;
  let upstream: EchoUpstream;
  let guard: Guard;
  let prometheus: PrometheusServer;
  let instance: string;

  beforeAll(async () => {
    pki = await createPki();
    stub = await startIntrospectionStub(pki.certs.server);
    upstream = await startEchoUpstream();
    guard = await startGuard(pki, {
      listen: { host: '127.0.0.1', port: 0 },
      tls: { cert: pki.files.server.cert, key: pki.files.server.key },
      introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca },
      upstream: upstream.url,
      admin: { host: '127.0.0.1', port: 0 },
    });
    instance = `127.0.0.1:${guard.started.adminPort}`;
    prometheus = await startPrometheus({ targets: { cnfguard: [instance] }, ruleFiles: [join(RULES, 'alerts.yaml')] });
  }, 30_000);

  afterAll(async () => {
    await prometheus?.stop();
    await guard?.stop();
    await upstream?.stop();
    await stub?.stop();
    await pki?.cleanup();
  });

  it('fires the certificate-reload and config-reload alerts on the first failure of each', async () => {
    // Scraped at 0 before anything fails: the baseline increase() needs.
    await waitFor(
      async () => {
        const [cert, config] = await Promise.all(['cnfguard_cert_reload_total{result="failure"}', 'cnfguard_config_reload_total{result="rejected"}'].map((q) => prometheus.query(q)));
        return cert?.length === 1 && cert[0]!.value === 0 && config?.length === 1 && config[0]!.value === 0;
      },
      () => `a scrape of both failure series at 0: ${prometheus.output().slice(-1000)}`,
      { timeoutMs: 10_000, intervalMs: 200 },
    );
    expect(await prometheus.alerts()).toEqual([]);

    const cert = readFileSync(pki.files.server.cert, 'utf8');
    const config = readFileSync(guard.configFile, 'utf8');
    writeFileSync(pki.files.server.cert, 'not a certificate\n');
    writeFileSync(guard.configFile, 'workers: lots\n');
    try {
      const report = await guard.app.reload();
      expect(report.certificates).toBe('failure');
      expect(report.config).toBe('rejected');
    } finally {
      writeFileSync(pki.files.server.cert, cert);
      writeFileSync(guard.configFile, config);
    }

    const wanted = ['CnfguardCertificateReloadFailed', 'CnfguardConfigReloadRejected'];
    let seen: PrometheusAlert[] = [];
    const firing = await waitFor(
      async () => {
        seen = await prometheus.alerts();
        const found = wanted.map((name) => seen.find((a) => a.labels.alertname === name && a.state === 'firing'));
        return found.every((a) => a !== undefined) ? (found as PrometheusAlert[]) : undefined;
      },
      () => `${wanted.join(' and ')} firing; alerts now: ${JSON.stringify(seen)}`,
      { timeoutMs: 15_000, intervalMs: 200 },
    );
    for (const alert of firing) {
      expect(alert.labels).toMatchObject({ job: 'cnfguard', instance, severity: 'warning' });
      expect(alert.annotations.summary).toMatch(new RegExp(`^cnfguard cnfguard ${instance.replace(/\./g, '\\.')}: `));
      expect(alert.annotations.summary).not.toContain('pod');
    }
    // Nothing else fires for a healthy cnfguard.
    expect(seen.filter((a) => !wanted.includes(a.labels.alertname!))).toEqual([]);
  }, 30_000);
});
