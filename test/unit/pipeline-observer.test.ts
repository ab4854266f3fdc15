/**
 * The pipeline's optional observer (pipeline/observer.ts, for `cnfguard explain`): each step
 * reported in order with its outcome, a refusal reported against the step that made it, the same
 * verdict with or without an observer, and never the token in what is reported.
 */
import { describe, expect, it } from 'vitest';
import { tokenInfoFromAnswer } from '../../src/introspection/token-info.ts';
import type { TokenIntrospector } from '../../src/introspection/cache.ts';
import { buildMetadataDirectory } from '../../src/pipeline/metadata.ts';
import { recordingObserver } from '../../src/pipeline/observer.ts';
import { createPipeline, type RequestFacts } from '../../src/pipeline/pipeline.ts';
import { compileRoutes } from '../../src/pipeline/route.ts';
import { createMemoryReplayStore } from '../../src/state/replay-store.ts';
import { createTokenValidator } from '../../src/validation/validator.ts';
import { minimalSettings } from '../fixtures/config.ts';

const TOKEN = 'opaque-token-value-never-reported';
const settings = minimalSettings({ binding: 'off', routes: [{ pathPrefix: '/admin', scopes: ['admin'] }] });
const routes = compileRoutes(settings);
const introspector: TokenIntrospector = {
  lookup: () => Promise.resolve(tokenInfoFromAnswer({ active: true, client_id: 'app', scope: 'read', cnf: { 'x5t#S256': 'bound-thumbprint' } })),
  size: 0,
  negativeSize: 0,
  clear() {},
};
const pipeline = createPipeline({
  routes,
  metadata: buildMetadataDirectory(settings, routes),
  validator: createTokenValidator({ introspector, cache: { maxEntries: 0, maxTtlSeconds: 0 }, now: Date.now }),
  dpop: { policy: settings.dpop, replayStore: createMemoryReplayStore({ maxEntries: 10 }), now: () => Date.now() / 1000 },
  now: () => Date.now(),
  limits: { urlBytes: 100, headerCount: 10, formBodyBytes: 50 },
});
const facts = (overrides: Partial<RequestFacts> = {}): RequestFacts => ({
  method: 'GET',
  target: '/x',
  hostLines: ['api.example'],
  headerCount: 3,
  authorization: [`Bearer ${TOKEN}`],
  dpop: undefined,
  peer: '192.0.2.1',
  certificate: undefined,
  certificateError: undefined,
  body: { declaredLength: undefined, chunked: false, form: false },
  ...overrides,
});
const noForm = () => Promise.resolve({ kind: 'read' as const, bytes: Buffer.alloc(0) });

async function observed(overrides: Partial<RequestFacts> = {}) {
  const observer = recordingObserver();
  const verdict = await pipeline.evaluate(facts(overrides), noForm, observer);
  return { verdict, steps: observer.steps.map((s) => [s.step, s.outcome, s.facts.reason]), reports: observer.steps };
}

describe('pipeline observer', () => {
  it('an allowed request: every step passed, in order, with what it found', async () => {
    const { verdict, steps, reports } = await observed();
    expect(verdict.decision.allow).toBe(true);
    expect(steps).toEqual([
      ['shape', 'passed', undefined],
      ['route', 'passed', undefined],
      ['certificate', 'passed', undefined],
      ['token', 'passed', undefined],
      ['validation', 'passed', undefined],
      ['decision', 'passed', undefined],
    ]);
    expect(reports.find((r) => r.step === 'validation')?.facts).toMatchObject({ source: 'introspection', active: true, clientId: 'app', cnf: { 'x5t#S256': 'bound-thumbprint' } });
    expect(JSON.stringify(reports)).not.toContain(TOKEN);
  });

  it('a refusal is reported against the step that made it, and nothing after it', async () => {
    expect((await observed({ target: `/${'a'.repeat(200)}` })).steps).toEqual([['shape', 'refused', 'url_too_long']]);
    expect((await observed({ authorization: undefined })).steps.at(-1)).toEqual(['token', 'refused', 'credentials_missing']);
    expect((await observed({ target: '/x?access_token=abc' })).steps.at(-1)).toEqual(['token', 'refused', 'token_in_query']);
    const scope = await observed({ target: '/admin/x' });
    expect(scope.steps.at(-1)).toEqual(['decision', 'refused', 'insufficient_scope']);
    expect(scope.reports.find((r) => r.step === 'route')?.facts.route).toBe('routes[0]');
  });

  it('the verdict is the same without an observer', async () => {
    for (const overrides of [{}, { authorization: undefined }, { target: '/admin/x' }]) {
      const [withObserver, without] = [await pipeline.evaluate(facts(overrides), noForm, recordingObserver()), await pipeline.evaluate(facts(overrides), noForm)];
      expect(withObserver.decision.allow ? 'allow' : withObserver.decision.error.reason).toBe(without.decision.allow ? 'allow' : without.decision.error.reason);
    }
  });
});
