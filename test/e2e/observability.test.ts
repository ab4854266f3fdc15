/**
 * The Grafana dashboard (deploy/grafana/cnfguard.json) and the Prometheus alert rules
 * (deploy/prometheus/alerts.yaml) name only metrics that cnfguard really exports: every PromQL
 * expression in them is read for its metric names, and each must be in the /metrics output of a
 * running cnfguard (histogram series by their _bucket, _sum and _count names), with only label
 * names that metric carries. A misspelt metric in a panel or an alert is a test failure, not a
 * silent empty graph or an alert that never fires.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { startEchoUpstream, type EchoUpstream } from '../../demo/echo-upstream.ts';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { scrape, type Scrape } from '../fixtures/prometheus.ts';
import { createPki, curl, startGuard, type Guard, type Pki } from '../fixtures/stack.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const DASHBOARD = join(ROOT, 'deploy', 'grafana', 'cnfguard.json');
const ALERTS = join(ROOT, 'deploy', 'prometheus', 'alerts.yaml');

/** Labels Prometheus adds at scrape time (target and Kubernetes discovery), not cnfguard's own. */
const TARGET_LABELS = new Set(['job', 'instance', 'namespace', 'pod', 'container', 'service', 'endpoint', 'le', 'quantile']);

/** Metrics cnfguard exports only under a config this test's guard does not have (a Redis store). */
const CONDITIONAL = new Map([['cnfguard_shared_state_up', 'sharedState']]);

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'and', 'or', 'unless', 'inf', 'nan', 'atan2']);

interface Selector {
  metric: string;
  labels: string[];
}

/**
 * The vector selectors of a PromQL expression: each metric name with the label names its
 * matchers use. Strings, grouping lists and durations are dropped first; what is left that is an
 * identifier not followed by `(` and not a keyword is a metric name. Grafana's `$variables` are
 * only allowed inside matchers and ranges, where they are dropped too.
 */
function selectorsOf(expr: string): Selector[] {
  let text = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  text = text.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  text = text.replace(/\[[^\]]*\]/g, ' ');
  const selectors: Selector[] = [];
  const pattern = /(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?|\{([^}]*)\}/g;
  for (const match of text.matchAll(pattern)) {
    if (match[4] !== undefined) throw new Error(`a selector without a metric name in ${expr}`);
    const [, name, matchers, call] = match;
    if (call !== undefined || KEYWORDS.has(name!.toLowerCase())) continue;
    const labels = [...(matchers ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)].map((m) => m[1]!);
    selectors.push({ metric: name!, labels });
  }
  if (/\$(?!__rate_interval|__interval|__range)/.test(text.replace(/\{[^}]*\}/g, ''))) throw new Error(`a Grafana variable outside a matcher in ${expr}`);
  return selectors;
}

interface Expression {
  where: string;
  expr: string;
}

function dashboardExpressions(): Expression[] {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: { title: string; type: string; targets?: { expr: string }[] }[];
    templating: { list: { name: string; type: string; query?: { query: string } }[] };
  };
  const found: Expression[] = [];
  for (const panel of dashboard.panels) {
    if (panel.type === 'row') continue;
    expect(panel.targets?.length ?? 0, `panel ${panel.title} has a query`).toBeGreaterThan(0);
    for (const target of panel.targets ?? []) found.push({ where: `panel "${panel.title}"`, expr: target.expr });
  }
  for (const variable of dashboard.templating.list) {
    if (variable.type !== 'query') continue;
    // label_values(<selector>, <label>): the selector is PromQL, the label a name on it.
    const query = /^label_values\((.*),\s*([a-zA-Z_]\w*)\)$/.exec(variable.query?.query ?? '');
    expect(query, `variable ${variable.name} is label_values(selector, label)`).not.toBeNull();
    found.push({ where: `variable $${variable.name}`, expr: `${query![1]!}` });
  }
  return found;
}

function alertExpressions(): Expression[] {
  const rules = parseYaml(readFileSync(ALERTS, 'utf8')) as { groups: { name: string; rules: { alert?: string; record?: string; expr: string; labels?: { severity?: string } }[] }[] };
  return rules.groups.flatMap((group) =>
    group.rules.map((rule) => {
      expect(rule.alert ?? rule.record, `a rule of group ${group.name} is named`).toBeTypeOf('string');
      if (rule.alert !== undefined) expect(['warning', 'critical'], `${rule.alert} severity`).toContain(rule.labels?.severity);
      return { where: `alert ${rule.alert ?? rule.record}`, expr: String(rule.expr) };
    }),
  );
}

/** Metric names a scrape offers: families, their samples, and a histogram's _bucket/_sum/_count. */
function exported(metrics: Scrape): Set<string> {
  const names = new Set(metrics.names);
  for (const [name, type] of metrics.types) {
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name}${suffix}`);
    if (type === 'summary') for (const suffix of ['_sum', '_count']) names.add(`${name}${suffix}`);
  }
  return names;
}

/** Label names each metric's samples carry. */
function labelsByMetric(metrics: Scrape): Map<string, Set<string>> {
  const labels = new Map<string, Set<string>>();
  for (const sample of metrics.samples) {
    const set = labels.get(sample.name) ?? new Set<string>();
    for (const name of Object.keys(sample.labels)) set.add(name);
    labels.set(sample.name, set);
  }
  return labels;
}

describe('reading PromQL', () => {
  it('finds metric names and their matcher labels, not functions, keywords, labels or variables', () => {
    expect(
      selectorsOf('histogram_quantile(0.95, sum by (le, route) (rate(cnfguard_x_bucket{job=~"$job", route!="a{b}"}[$__rate_interval]))) > 2 * cnfguard_y offset 1h and on (pod) up'),
    ).toEqual([
      { metric: 'cnfguard_x_bucket', labels: ['job', 'route'] },
      { metric: 'cnfguard_y', labels: [] },
      { metric: 'up', labels: [] },
    ]);
    expect(selectorsOf('min(cnfguard_certificate_not_after_seconds) - time() < 14 * 86400 and 1e3 > 0')).toEqual([{ metric: 'cnfguard_certificate_not_after_seconds', labels: [] }]);
    expect(() => selectorsOf('sum(rate({__name__="x"}[5m]))')).toThrow(/without a metric name/);
    expect(() => selectorsOf('cnfguard_x > $threshold')).toThrow(/variable/);
  });
});

describe('the dashboard and the alert rules name only exported metrics', () => {
  let pki: Pki;
  let stub: IntrospectionStub;
  let upstream: EchoUpstream;
  let guard: Guard;
  let metrics: Scrape;

  beforeAll(async () => {
    pki = await createPki();
    stub = await startIntrospectionStub(pki.certs.server);
    upstream = await startEchoUpstream();
    const client1 = thumbprintS256(new X509Certificate(pki.certs.clients.client1.cert).raw);
    stub.answers.set('tok', { active: true, client_id: 'app', scope: 'read', token_type: 'Bearer', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': client1 } });
    guard = await startGuard(
      pki,
      {
        listen: { host: '127.0.0.1', port: 0 },
        tls: { cert: pki.files.server.cert, key: pki.files.server.key },
        introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca },
        upstream: upstream.url,
        admin: { host: '127.0.0.1', port: 0 },
        routes: [{ name: 'reports', pathPrefix: '/reports', binding: 'report-only' }],
      },
      { defaultMetrics: true },
    );
    // Traffic, so that labelled series have samples whose labels can be checked.
    await curl(pki, `${guard.started.url}/x`, { cert: pki.files.client1, token: 'tok' });
    await curl(pki, `${guard.started.url}/x`, { cert: pki.files.client2, token: 'tok' });
    await curl(pki, `${guard.started.url}/reports/x`, { cert: pki.files.client2, token: 'tok' });
    // A certificate reload that fails (the old certificate stays), for cnfguard_cert_reload_total{result}.
    const served = readFileSync(pki.files.server.cert, 'utf8');
    writeFileSync(pki.files.server.cert, 'not a certificate\n');
    expect((await guard.app.reload()).certificates).toBe('failure');
    writeFileSync(pki.files.server.cert, served);
    metrics = await scrape(guard.started.adminUrl);
  });

  afterAll(async () => {
    await guard?.stop();
    await upstream?.stop();
    await stub?.stop();
    await pki?.cleanup();
  });

  it.each([
    ['deploy/grafana/cnfguard.json', dashboardExpressions],
    ['deploy/prometheus/alerts.yaml', alertExpressions],
  ] as const)('%s', (_file, expressions) => {
    const names = exported(metrics);
    const labels = labelsByMetric(metrics);
    const problems: string[] = [];
    const all = expressions();
    expect(all.length).toBeGreaterThan(3);
    for (const { where, expr } of all) {
      const selectors = selectorsOf(expr);
      if (selectors.length === 0) problems.push(`${where}: no metric in ${expr}`);
      for (const { metric, labels: used } of selectors) {
        if (CONDITIONAL.has(metric)) continue; // exported only under its config key: test/e2e/shared-state.test.ts reads it
        if (!names.has(metric)) {
          problems.push(`${where}: ${metric} is not in cnfguard's /metrics`);
          continue;
        }
        const carried = labels.get(metric);
        for (const label of used) {
          if (TARGET_LABELS.has(label)) continue;
          if (carried === undefined) problems.push(`${where}: ${metric} has no samples to check label ${label} against`);
          else if (!carried.has(label)) problems.push(`${where}: ${metric} has no label ${label} (it has ${[...carried].join(', ') || 'none'})`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('would notice a misspelt metric or label', () => {
    const names = exported(metrics);
    expect(names.has('cnfguard_request_duration_seconds_bucket')).toBe(true);
    expect(names.has('cnfguard_request_duration_seconds_buckets')).toBe(false);
    expect(labelsByMetric(metrics).get('cnfguard_responses_total')?.has('status')).toBe(true);
    expect(labelsByMetric(metrics).get('cnfguard_responses_total')?.has('code')).toBe(false);
  });
});
