/**
 * Issue 18: AS mistakes (wrong introspection.ca, wrong secret, AS down) show at start-up, in one
 * warning that names the URL, the cause and what to check, not only at the first request; the
 * breaker's warning names them too. Real listeners on 127.0.0.1, a scripted AS.
 */
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDevCertificates } from '../../src/tls/dev-certs.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { baseConfig, curl, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';
import { waitFor } from '../fixtures/wait.ts';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

let d: Deployment;
let stub: IntrospectionStub;
let otherCa: string;

beforeAll(async () => {
  d = await startDeployment();
  stub = await startIntrospectionStub(d.pki.certs.server);
  otherCa = join(d.pki.dir, 'other-ca.crt');
  await writeFile(otherCa, generateDevCertificates().ca.cert);
});
afterAll(async () => {
  await stub?.stop();
  await d?.stop();
});

/** A guard with the probe on, and the log entries once the probe has answered. */
async function probed(introspection: Record<string, unknown>): Promise<{ g: Guard; entries: Record<string, unknown>[] }> {
  const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { clientId: 'rs', timeoutMs: 800, ...introspection, probeAtStartup: true } }));
  await waitFor(() => g.logs.entries().some((e) => e.msg === 'introspection endpoint answers' || String(e.msg).startsWith('introspection probe failed')), "the start-up probe's log line");
  return { g, entries: g.logs.entries() };
}

function probeWarnings(entries: Record<string, unknown>[]) {
  return entries.filter((e) => String(e.msg).startsWith('introspection probe failed'));
}

describe('the start-up probe', () => {
  it('says nothing alarming when the AS answers, and calls it once', async () => {
    const before = stub.calls();
    const { g, entries } = await probed({ url: stub.url, clientSecret: 'rs-secret', ca: d.pki.files.ca });
    try {
      expect(probeWarnings(entries)).toEqual([]);
      expect(entries.find((e) => e.msg === 'introspection endpoint answers')).toMatchObject({ level: 'info', url: stub.url });
      expect(stub.calls() - before).toBe(1);
    } finally {
      await g.stop();
    }
  });

  it.each<[string, { ca?: string; url?: string; clientSecret: string }, string, RegExp]>([
    ['a wrong introspection.ca', { ca: 'OTHER', clientSecret: 'rs-secret' }, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', /introspection\.ca/],
    ['a wrong secret', { clientSecret: 'wrong-secret' }, 'HTTP 401', /introspection\.clientId, the secret/],
    ['no AS listening', { url: 'CLOSED', clientSecret: 'rs-secret' }, 'ECONNREFUSED', /the AS is down/],
  ])('%s: one warning naming the URL, the cause and what to check; no secret in it', async (_name, settings, cause, check) => {
    let url = stub.url;
    if (settings.url === 'CLOSED') {
      const blocker = createServer();
      await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
      url = `https://127.0.0.1:${(blocker.address() as { port: number }).port}/introspect`;
      await new Promise((resolve) => blocker.close(resolve));
    }
    const { g, entries } = await probed({ ca: d.pki.files.ca, ...settings, url, ...(settings.ca === 'OTHER' && { ca: otherCa }) });
    try {
      const warnings = probeWarnings(entries);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({ level: 'warn', url, cause });
      expect(warnings[0]?.msg).toContain(url);
      expect(warnings[0]?.msg).toContain(cause);
      expect(String(warnings[0]?.check)).toMatch(check);
      expect(g.logs.text()).not.toContain('rs-secret');
      expect(g.logs.text()).not.toContain('wrong-secret');
      expect(g.logs.text()).not.toContain('cnfguard-startup-probe-');
      // Serving does not wait for the AS, and the probe is not a request: no metric moved.
      const metrics = await (await fetch(`${g.started.adminUrl}/metrics`)).text();
      expect(metrics).not.toMatch(/^cnfguard_introspection_requests_total\{[^}]*\} [1-9]/m);
    } finally {
      await g.stop();
    }
  });

  it('probeAtStartup: false makes no AS call', async () => {
    const before = stub.calls();
    const g = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, probeAtStartup: false } }));
    // A probe is sent from start(); stop() closes the introspection client only once every call it
    // made has been answered. After it, a probe that was sent has been counted by the AS.
    await g.stop();
    expect(stub.calls()).toBe(before);
    expect(g.logs.entries().filter((e) => String(e.msg).startsWith('introspection'))).toEqual([]);
  });
});

describe("the breaker's warning", () => {
  it('names the URL, the cause and what to check when the circuit opens', async () => {
    const g = await startGuard(
      d.pki,
      baseConfig(d.pki, d.as, d.upstream, { introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: otherCa, circuitBreaker: { failureThreshold: 2, openSeconds: 5 } } }),
    );
    try {
      const token = await d.tokenFor('client1');
      for (let i = 0; i < 2; i++) expect((await curl(d.pki, `${g.started.url}/x`, { cert: d.pki.files.client1, token })).status).toBe(503);
      const open = g.logs.entries().find((e) => e.state === 'open');
      expect(open).toMatchObject({ level: 'warn', url: stub.url, cause: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
      expect(open?.msg).toBe(`introspection circuit open: ${stub.url} is failing (last: UNABLE_TO_VERIFY_LEAF_SIGNATURE); ${String(open?.check)}`);
      expect(String(open?.check)).toMatch(/introspection\.ca/);
      expect(g.logs.text()).not.toContain(token);
    } finally {
      await g.stop();
    }
  });
});
