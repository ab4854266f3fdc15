/**
 * What a config reload may change, swapped as one object so that a request sees one version:
 * the pipeline over the compiled routes, the RFC 9728 documents, and the header names no client
 * may send.
 */
import type { Settings } from './config/schema.ts';
import { buildMetadataDirectory } from './pipeline/metadata.ts';
import { createDpopCaches, type DpopCaches, type SignatureThread } from './proof/dpop.ts';
import { createHttpsigDeps } from './proof/httpsig.ts';
import type { NonceSource } from './proof/nonce.ts';
import { createOriginCheck, type ServedOrigins } from './proof/origins.ts';
import type { ReplayStore } from './state/replay-store.ts';
import type { TokenValidator } from './validation/validator.ts';
import { createPipeline, type Pipeline } from './pipeline/pipeline.ts';
import { compileRoutes } from './pipeline/route.ts';
import { FORWARDING_HEADERS } from './pipeline/upstream-headers.ts';
import { pipelineLimits } from './proxy/limits.ts';
import { createAssertionIssuer } from './assertion/issuer.ts';
import type { AssertionKeyRing } from './assertion/keys.ts';

export interface Runtime {
  pipeline: Pipeline;
  realm: string;
  /** Lower-case header names no client may send upstream: identity, claim, certificate and forwarding headers. */
  stripped: ReadonlySet<string>;
}

export interface RuntimeDependencies {
  validator: TokenValidator;
  /** DPoP `jti`s seen: this process's, or the shared store's. Made once, kept across reloads. */
  replayStore: ReplayStore;
  /** DPoP nonces; required from clients only while `dpop.nonce` is on. */
  nonces: NonceSource;
  /** Milliseconds since the epoch. */
  now: () => number;
  /** Where DPoP proof signatures are checked (proof/dpop.ts); default `event-loop`. */
  signatureThread?: SignatureThread;
  /** What DPoP checks remember between proofs (known proof headers, normalised URIs); default: made with the runtime. */
  dpopCaches?: DpopCaches;
  /** The server certificate and listener port: without `publicOrigin`, the origins a DPoP `htu` may name (proof/origins.ts). Unset: any. */
  served?: ServedOrigins;
  /**
   * The runtime a reload replaces. Its stripped headers stay stripped: an upstream may still trust
   * a header that was renamed or whose trusted proxy was removed, so no client may start sending it.
   */
  previous?: Runtime;
  /** The assertion signing keys (current and recently previous), kept across reloads. */
  assertionKeys?: AssertionKeyRing;
}

export function buildRuntime(settings: Settings, deps: RuntimeDependencies): Runtime {
  const routes = compileRoutes(settings);
  // As the client copies are compared (upstream-headers.ts): `_` read as `-`, so that a managed
  // x_tenant also strips a client's x-tenant and x_tenant (one HTTP_X_TENANT to CGI and WSGI).
  const stripped = new Set([...routes.managedHeaders, ...FORWARDING_HEADERS, ...settings.trustedProxies.map((proxy) => proxy.header)].map((name) => name.toLowerCase().replaceAll('_', '-')));
  for (const name of deps.previous?.stripped ?? []) stripped.add(name);
  return {
    pipeline: createPipeline({
      routes,
      validator: deps.validator,
      dpop: {
        policy: settings.dpop,
        replayStore: deps.replayStore,
        nonces: settings.dpop.nonce ? deps.nonces : undefined,
        now: () => deps.now() / 1000,
        signatureThread: deps.signatureThread,
        caches: deps.dpopCaches ?? createDpopCaches(),
        origins: deps.served === undefined ? undefined : createOriginCheck({ ...deps.served, routeHosts: settings.routes.map((route) => route.host), publicOrigins: [settings.publicOrigin, ...settings.routes.map((route) => route.publicOrigin)] }),
      },
      httpsig: createHttpsigDeps({
        policy: settings.httpsig,
        maxBufferedBodyBytes: settings.httpsig.maxBufferedBodyBytes,
        // Signature nonces share the DPoP replay store: one per process, or the shared one.
        replayStore: deps.replayStore,
        now: () => deps.now() / 1000,
      }),
      now: deps.now,
      limits: pipelineLimits(settings.limits),
      metadata: buildMetadataDirectory(settings, routes),
      assertions:
        settings.assertion === undefined || deps.assertionKeys === undefined
          ? undefined
          : { issuer: createAssertionIssuer({ ring: deps.assertionKeys, issuer: settings.assertion.issuer, header: settings.assertion.header, now: deps.now }), jwks: deps.assertionKeys.jwks },
    }),
    realm: settings.errors.realm,
    stripped,
  };
}
