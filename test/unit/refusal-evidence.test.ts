/**
 * Issue 28: a binding refusal's access line at debug names the thumbprint the request presented
 * and the value the token is bound to (certificate_mismatch: x5t#S256; DPoP: the proof's jkt and
 * cnf.jkt). Thumbprints are public values; at info the line is as before.
 */
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/admin/metrics.ts';
import { INACTIVE, type TokenInfo } from '../../src/introspection/token-info.ts';
import { createLogger } from '../../src/log.ts';
import { createAccessLog } from '../../src/observe/access-log.ts';
import { decide, type DecisionInput } from '../../src/pipeline/decide.ts';
import type { Verdict } from '../../src/pipeline/pipeline.ts';
import { compileRoutes, type RoutePolicy } from '../../src/pipeline/route.ts';
import { clientCertificate } from '../fixtures/certificate.ts';
import { minimalSettings } from '../fixtures/config.ts';

const NOW = 1_750_000_000;
const b64 = (label: string) => createHash('sha256').update(label).digest('base64url');
const CERT = clientCertificate('client1');
const OTHER_CERT = clientCertificate('client2');
const FALLBACK = compileRoutes(minimalSettings()).fallback;
const DPOP: RoutePolicy = { ...FALLBACK, methods: ['dpop'] };

function token(overrides: Partial<TokenInfo>): TokenInfo {
  return { ...INACTIVE, active: true, subject: 'alice', clientId: 'app', scope: 'read', exp: NOW + 600, aud: [], ...overrides };
}

/** The access line written for the decision of `input`, at `level`. */
async function lineFor(level: string, input: Partial<DecisionInput> & Pick<DecisionInput, 'token' | 'policy'>): Promise<Record<string, unknown>> {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(chunk.toString());
      callback();
    },
  });
  const log = createAccessLog(createLogger(level, stream), createMetrics({ defaultMetrics: false }));
  const decision = decide({ certificate: undefined, now: NOW, ...input });
  const verdict: Verdict = { route: input.policy, decision, target: '/x', host: 'h', body: { kind: 'as-received' }, closeConnection: false, scheme: input.scheme ?? 'bearer' };
  log.record({ requestId: 'r', method: 'GET', path: '/x', status: 401, verdict, failure: undefined, upstreamStatus: undefined, thumbprint: undefined, latencyMs: 1 });
  await new Promise((resolve) => setImmediate(resolve));
  return JSON.parse(lines[0] as string) as Record<string, unknown>;
}

describe('binding refusals at debug', () => {
  const mtls = { token: token({ cnf: { 'x5t#S256': CERT.thumbprint } }), policy: FALLBACK, certificate: OTHER_CERT };
  const dpop = { token: token({ tokenType: 'DPoP', cnf: { jkt: b64('bound') } }), policy: DPOP, scheme: 'dpop' as const, proof: { jkt: b64('presented') } };

  it('certificate_mismatch names the presented x5t#S256 and the cnf value', async () => {
    const line = await lineFor('debug', mtls);
    expect(line).toMatchObject({ reason: 'certificate_mismatch', cnfMember: 'x5t#S256', presented: OTHER_CERT.thumbprint, bound: CERT.thumbprint, level: 'info' });
  });

  it('a DPoP key mismatch names the proof jkt and cnf.jkt', async () => {
    const line = await lineFor('debug', dpop);
    expect(line).toMatchObject({ reason: 'dpop_key_mismatch', cnfMember: 'jkt', presented: b64('presented'), bound: b64('bound') });
  });

  it('a missing certificate names the bound value and no presented one', async () => {
    const line = await lineFor('debug', { ...mtls, certificate: undefined });
    expect(line).toMatchObject({ reason: 'certificate_missing', cnfMember: 'x5t#S256', bound: CERT.thumbprint });
    expect(line).not.toHaveProperty('presented');
  });

  it('at info the line is unchanged: no thumbprints', async () => {
    for (const input of [mtls, dpop]) {
      const line = await lineFor('info', input);
      expect(line).not.toHaveProperty('presented');
      expect(line).not.toHaveProperty('bound');
      expect(line).not.toHaveProperty('cnfMember');
    }
  });
});
