/** The pipeline's check order, over plain facts: no sockets, a recording introspector and form reader. */
import { describe, expect, it } from 'vitest';
import { tokenInfoFromAnswer } from '../../src/introspection/token-info.ts';
import { GuardError } from '../../src/edge/render.ts';
import type { LookupContext, TokenIntrospector } from '../../src/introspection/cache.ts';
import { buildMetadataDirectory } from '../../src/pipeline/metadata.ts';
import { createPipeline, type FormRead, type RequestFacts } from '../../src/pipeline/pipeline.ts';
import { compileRoutes } from '../../src/pipeline/route.ts';
import { createTokenValidator } from '../../src/validation/validator.ts';
import { createMemoryReplayStore } from '../../src/state/replay-store.ts';
import { minimalSettings } from '../fixtures/config.ts';

const settings = minimalSettings({
  binding: 'off',
  routes: [{ pathPrefix: '/small', maxBodyBytes: 10 }, { host: 'admin.example', scopes: ['admin'] }],
});

const DPOP = { policy: settings.dpop, replayStore: createMemoryReplayStore({ maxEntries: 1000 }), now: () => Date.now() / 1000 };

function harness(answer: Record<string, unknown> = { active: true, client_id: 'app', scope: 'read' }) {
  const calls: { token: string; context: LookupContext | undefined }[] = [];
  const formReads: number[] = [];
  const introspector: TokenIntrospector = {
    lookup(token, context) {
      calls.push({ token, context });
      return Promise.resolve(tokenInfoFromAnswer(answer));
    },
    size: 0,
    negativeSize: 0,
    clear() {},
  };
  const routes = compileRoutes(settings);
  const pipeline = createPipeline({ routes, metadata: buildMetadataDirectory(settings, routes), validator: createTokenValidator({ introspector, cache: { maxEntries: 0, maxTtlSeconds: 0 }, now: Date.now }), dpop: DPOP, now: () => Date.now(), limits: { urlBytes: 100, headerCount: 10, headerBytes: 1000, formBodyBytes: 50 } });
  let form: FormRead = { kind: 'read', bytes: Buffer.from('a=1') };
  const evaluate = (overrides: Partial<RequestFacts> = {}, body: Partial<RequestFacts['body']> = {}) =>
    pipeline.evaluate(
      { method: 'POST', target: '/x', hostLines: ['api.example'], headerCount: 3, authorization: ['Bearer tok'], dpop: undefined, peer: '192.0.2.1', certificate: undefined, certificateError: undefined, ...overrides, body: { declaredLength: undefined, chunked: false, form: false, ...body } },
      (limit) => {
        formReads.push(limit);
        return Promise.resolve(form);
      },
    );
  return { calls, formReads, evaluate, setForm: (next: FormRead) => (form = next) };
}

const reasonOf = async (verdict: Promise<{ decision: { allow: boolean; error?: GuardError } }>) => {
  const { decision } = await verdict;
  return decision.allow ? 'allow' : decision.error?.reason;
};

describe('pipeline order', () => {
  it('shape comes first: nothing else is looked at, not even the token', async () => {
    const h = harness();
    expect(await reasonOf(h.evaluate({ target: `/${'a'.repeat(200)}` }))).toBe('url_too_long');
    expect(await reasonOf(h.evaluate({ headerCount: 11 }))).toBe('headers_too_many');
    expect(await reasonOf(h.evaluate({ headerBytes: 1001 }))).toBe('headers_too_large');
    expect(await reasonOf(h.evaluate({ hostLines: undefined }))).toBe('host_malformed');
    expect(await reasonOf(h.evaluate({ hostLines: ['a.example', 'b.example'] }))).toBe('host_malformed');
    expect(await reasonOf(h.evaluate({ target: '/a%2fb' }))).toBe('path_malformed');
    expect(h.calls).toEqual([]);
  });

  it('the route decides the body limit before the token is introspected', async () => {
    const h = harness();
    expect(await reasonOf(h.evaluate({ target: '/small' }, { declaredLength: 11 }))).toBe('body_too_large');
    expect(await reasonOf(h.evaluate({ target: '/large' }, { declaredLength: 11 }))).toBe('allow');
    expect(h.calls).toHaveLength(1);
  });

  it('a malformed forwarded certificate and a token in the URL are refused before introspection', async () => {
    const h = harness();
    expect(await reasonOf(h.evaluate({ certificateError: new GuardError('forwarded_certificate_malformed') }))).toBe('forwarded_certificate_malformed');
    expect(await reasonOf(h.evaluate({ target: '/x?Access_Token=t' }))).toBe('token_in_query');
    expect(await reasonOf(h.evaluate({ authorization: undefined }))).toBe('credentials_missing');
    expect(h.calls).toEqual([]);
  });

  it('the peer goes with the lookup, for the introspection budget', async () => {
    const h = harness();
    await h.evaluate();
    expect(h.calls).toEqual([{ token: 'tok', context: { peer: '192.0.2.1', certificate: undefined } }]);
  });

  it('routes by the validated Host: the host route applies its scopes', async () => {
    expect(await reasonOf(harness().evaluate({ hostLines: ['ADMIN.example:8443'] }))).toBe('insufficient_scope');
  });

  it('reads a form body only when the token would be allowed, at the smaller of the two limits', async () => {
    const denied = harness({ active: false });
    expect(await reasonOf(denied.evaluate({}, { form: true, declaredLength: 3 }))).toBe('token_inactive');
    expect(denied.formReads).toEqual([]);

    const allowed = harness();
    const verdict = await allowed.evaluate({}, { form: true, declaredLength: 3 });
    expect(verdict.decision.allow).toBe(true);
    expect(verdict.body).toEqual({ kind: 'buffered', bytes: Buffer.from('a=1') });
    expect(allowed.formReads).toEqual([50]);
    await allowed.evaluate({ target: '/small' }, { form: true });
    expect(allowed.formReads).toEqual([50, 10]);
  });

  it.each<[FormRead, string, boolean]>([
    [{ kind: 'read', bytes: Buffer.from('x=1&ACCESS_TOKEN=t') }, 'token_in_body', false],
    [{ kind: 'too_large' }, 'form_body_too_large', true],
    [{ kind: 'busy' }, 'server_busy', true],
    [{ kind: 'aborted' }, 'client_aborted', true],
  ])('a form read %j is refused as %s', async (form, reason, closes) => {
    const h = harness();
    h.setForm(form);
    const verdict = await h.evaluate({}, { form: true });
    expect(verdict.decision.allow ? 'allow' : verdict.decision.error.reason).toBe(reason);
    expect(verdict.closeConnection).toBe(closes);
  });

  it('a chunked body is limited to the route as it streams; a declared one is sent as received', async () => {
    const h = harness();
    expect((await h.evaluate({ target: '/small' }, { chunked: true })).body).toEqual({ kind: 'limited', limitBytes: 10 });
    expect((await h.evaluate({}, { declaredLength: 5 })).body).toEqual({ kind: 'as-received' });
  });

  it('forwards the canonical target and the validated Host', async () => {
    const verdict = await harness().evaluate({ target: '/a/./b/%7e?q=1', hostLines: ['api.example:8443'] });
    expect(verdict).toMatchObject({ target: '/a/b/~?q=1', host: 'api.example:8443' });
  });
});
