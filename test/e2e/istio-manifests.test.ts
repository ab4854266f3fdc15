/**
 * The Istio artefacts (k8s/istio/) agree with Istio's API and with each other, as
 * manifests.test.ts checks k8s/: there is no typed model of Istio's CRDs here, so each resource
 * goes through a strict zod schema of the fields these files use (a misspelt or unknown field
 * fails), and then:
 * - the AuthorizationPolicy (action CUSTOM) names a provider the mesh config defines, and selects
 *   the pods of k8s/deployment.yaml; a STRICT PeerAuthentication selects the same pods (on a
 *   plaintext connection the sidecar would pass a client's own XFCC on);
 * - the provider calls the ServiceEntry's host and port, which is the loopback of the pod and the
 *   decisionApi port of the ConfigMap's cnfguard config; 127.0.0.1 is that config's trusted proxy,
 *   reading x-forwarded-client-cert as XFCC;
 * - the check request carries authorization, dpop and x-forwarded-client-cert, with path prefix
 *   /envoy; every identity header that config sets goes upstream on allow;
 * - the ConfigMap validates (kubernetes-models) and its config passes configSchema;
 * - kustomization.yaml lists exactly the kubectl resources.
 * As there, the "mutations" block breaks a copy in one place per check and requires it to fail.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BlockList } from 'node:net';
import { ConfigMap } from 'kubernetes-models/v1';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { configSchema } from '../../src/config/schema.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const ISTIO_DIR = join(ROOT, 'k8s', 'istio');
const DEPLOYMENT = join(ROOT, 'k8s', 'deployment.yaml');
/** For istioctl / Helm, not kubectl. */
const MESH_CONFIG = 'mesh-config.yaml';

// ------------------------------------------------------------------------------ strict schemas

const headerList = z.array(z.string().regex(/^[a-z0-9-]+$/, 'a lower-case header name')).min(1);
const duration = z.string().regex(/^\d+(\.\d+)?(ms|s|m|h)$/, 'a duration such as 1s');
const labels = z.record(z.string(), z.string());
const metadata = z.strictObject({ name: z.string().min(1), namespace: z.string().optional(), labels: labels.optional() });

/** meshConfig.extensionProviders[].envoyExtAuthzHttp (istio.io/api mesh/v1alpha1 MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationHttpProvider). */
const envoyExtAuthzHttp = z.strictObject({
  service: z.string().min(1),
  port: z.number().int().min(1).max(65535),
  timeout: duration.optional(),
  pathPrefix: z.string().startsWith('/').optional(),
  failOpen: z.boolean().optional(),
  statusOnError: z.string().optional(),
  includeRequestHeadersInCheck: headerList.optional(),
  includeAdditionalHeadersInCheck: z.record(z.string(), z.string()).optional(),
  includeRequestBodyInCheck: z.strictObject({ maxRequestBytes: z.number().int().optional(), allowPartialMessage: z.boolean().optional(), packAsBytes: z.boolean().optional() }).optional(),
  headersToUpstreamOnAllow: headerList.optional(),
  headersToDownstreamOnDeny: headerList.optional(),
  headersToDownstreamOnAllow: headerList.optional(),
});

const istioOperator = z.strictObject({
  apiVersion: z.literal('install.istio.io/v1alpha1'),
  kind: z.literal('IstioOperator'),
  metadata: metadata.optional(),
  spec: z.strictObject({
    meshConfig: z.strictObject({
      extensionProviders: z.array(z.strictObject({ name: z.string().min(1), envoyExtAuthzHttp })).min(1),
    }),
  }),
});

const serviceEntry = z.strictObject({
  apiVersion: z.literal('networking.istio.io/v1'),
  kind: z.literal('ServiceEntry'),
  metadata,
  spec: z.strictObject({
    hosts: z.array(z.string().min(1)).min(1),
    endpoints: z.array(z.strictObject({ address: z.string().min(1), ports: z.record(z.string(), z.number().int()).optional() })).optional(),
    ports: z.array(z.strictObject({ name: z.string().min(1), number: z.number().int().min(1).max(65535), protocol: z.enum(['HTTP', 'HTTPS', 'HTTP2', 'GRPC', 'TCP', 'TLS', 'MONGO']), targetPort: z.number().int().optional() })).min(1),
    resolution: z.enum(['NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN']),
    location: z.enum(['MESH_EXTERNAL', 'MESH_INTERNAL']).optional(),
    exportTo: z.array(z.string()).optional(),
  }),
});

const authorizationPolicy = z.strictObject({
  apiVersion: z.literal('security.istio.io/v1'),
  kind: z.literal('AuthorizationPolicy'),
  metadata,
  spec: z.strictObject({
    selector: z.strictObject({ matchLabels: labels }),
    action: z.literal('CUSTOM'),
    provider: z.strictObject({ name: z.string().min(1) }),
    // `{}` matches every request; `to`/`from`/`when` narrow it.
    rules: z.array(z.strictObject({ from: z.array(z.unknown()).optional(), to: z.array(z.unknown()).optional(), when: z.array(z.unknown()).optional() })).min(1),
  }),
});

const peerAuthentication = z.strictObject({
  apiVersion: z.literal('security.istio.io/v1'),
  kind: z.literal('PeerAuthentication'),
  metadata,
  spec: z.strictObject({
    selector: z.strictObject({ matchLabels: labels }),
    mtls: z.strictObject({ mode: z.enum(['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT']) }),
    portLevelMtls: z.record(z.string(), z.strictObject({ mode: z.enum(['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT']) })).optional(),
  }),
});

const kustomization = z.strictObject({ apiVersion: z.literal('kustomize.config.k8s.io/v1beta1'), kind: z.literal('Kustomization'), resources: z.array(z.string()).min(1) });

// ------------------------------------------------------------------------------ loading

interface Bundle {
  files: string[];
  mesh: unknown;
  serviceEntry: unknown;
  policy: unknown;
  peerAuthentication: unknown;
  configMap: unknown;
  kustomization: unknown;
  /** Pod template labels of k8s/deployment.yaml. */
  podLabels: Record<string, string>;
}

function one(file: string): unknown {
  const docs = parseAllDocuments(readFileSync(join(ISTIO_DIR, file), 'utf8'));
  if (docs.length !== 1 || docs[0]!.errors.length > 0) throw new Error(`${file}: expected one valid YAML document`);
  return docs[0]!.toJS();
}

function loadBundle(): Bundle {
  const deployment = parseYaml(readFileSync(DEPLOYMENT, 'utf8')) as { spec: { template: { metadata: { labels: Record<string, string> } } } };
  return {
    files: readdirSync(ISTIO_DIR).filter((f) => /\.ya?ml$/.test(f)).sort(),
    mesh: one(MESH_CONFIG),
    serviceEntry: one('serviceentry.yaml'),
    policy: one('authorizationpolicy.yaml'),
    peerAuthentication: one('peerauthentication.yaml'),
    configMap: one('configmap.yaml'),
    kustomization: one('kustomization.yaml'),
    podLabels: deployment.spec.template.metadata.labels,
  };
}

const providers = (b: Bundle) => istioOperator.parse(b.mesh).spec.meshConfig.extensionProviders;
const policyOf = (b: Bundle) => authorizationPolicy.parse(b.policy);
const providerOf = (b: Bundle) => {
  const name = policyOf(b).spec.provider.name;
  const found = providers(b).find((p) => p.name === name);
  expect(found, `extensionProviders has ${name}, the AuthorizationPolicy's provider`).toBeDefined();
  return found!.envoyExtAuthzHttp;
};
const cnfguardConfig = (b: Bundle) => {
  new ConfigMap(b.configMap as IConfigMap).validate();
  const text = (b.configMap as IConfigMap).data?.['cnfguard.yaml'];
  expect(text, 'configmap.yaml has cnfguard.yaml').toBeTypeOf('string');
  return configSchema.parse(parseYaml(text!.replace(/\$\{INTROSPECTION_SECRET\}/g, 'placeholder')));
};

// ------------------------------------------------------------------------------ checks

const CHECKS = {
  'istio: every resource matches its strict schema'(b: Bundle) {
    istioOperator.parse(b.mesh);
    serviceEntry.parse(b.serviceEntry);
    authorizationPolicy.parse(b.policy);
    peerAuthentication.parse(b.peerAuthentication);
    kustomization.parse(b.kustomization);
  },
  'istio: the checked pods take mesh mTLS only (STRICT), so no client XFCC passes on a plaintext connection'(b: Bundle) {
    const pa = peerAuthentication.parse(b.peerAuthentication);
    expect(pa.spec.mtls.mode).toBe('STRICT');
    expect(Object.values(pa.spec.portLevelMtls ?? {}).every((p) => p.mode === 'STRICT'), 'no port-level exception').toBe(true);
    expect(pa.spec.selector.matchLabels, 'the same pods as the AuthorizationPolicy').toEqual(policyOf(b).spec.selector.matchLabels);
  },
  'istio: the CUSTOM AuthorizationPolicy names a provider of the mesh config'(b: Bundle) {
    const names = providers(b).map((p) => p.name);
    expect(new Set(names).size, 'provider names are unique').toBe(names.length);
    expect(names).toContain(policyOf(b).spec.provider.name);
  },
  'istio: the AuthorizationPolicy selects the pods of k8s/deployment.yaml'(b: Bundle) {
    for (const [k, v] of Object.entries(policyOf(b).spec.selector.matchLabels)) expect(b.podLabels[k], `pod label ${k}`).toBe(v);
  },
  'istio: the provider calls the ServiceEntry, which is the pod loopback on the decisionApi port'(b: Bundle) {
    const provider = providerOf(b);
    const entry = serviceEntry.parse(b.serviceEntry);
    expect(entry.spec.hosts).toContain(provider.service);
    expect(entry.spec.ports.map((p) => p.number)).toContain(provider.port);
    expect(entry.spec.ports.find((p) => p.number === provider.port)?.protocol).toBe('HTTP');
    expect(entry.spec.resolution).toBe('STATIC');
    expect(entry.spec.endpoints?.map((e) => e.address)).toEqual(['127.0.0.1']);
    const config = cnfguardConfig(b);
    expect(config.decisionApi, 'the cnfguard config enables decisionApi').toBeDefined();
    expect(config.decisionApi?.port, 'provider port = decisionApi.port').toBe(provider.port);
    expect(config.decisionApi?.host).toBe('127.0.0.1');
  },
  'istio: the sidecar (127.0.0.1) is the trusted proxy, its XFCC the certificate header'(b: Bundle) {
    const config = cnfguardConfig(b);
    const entry = serviceEntry.parse(b.serviceEntry);
    const trusted = config.trustedProxies.filter((p) => {
      const list = new BlockList();
      for (const cidr of p.cidrs ?? []) {
        const [address, prefix] = cidr.split('/');
        list.addSubnet(address!, Number(prefix), address!.includes(':') ? 'ipv6' : 'ipv4');
      }
      return entry.spec.endpoints?.every((e) => list.check(e.address, 'ipv4'));
    });
    expect(trusted.map((p) => [p.header, p.format])).toEqual([['x-forwarded-client-cert', 'xfcc']]);
    expect(providerOf(b).includeRequestHeadersInCheck).toContain(trusted[0]?.header);
  },
  'istio: the check carries the token, the DPoP proof and XFCC, at /envoy, failing closed'(b: Bundle) {
    const provider = providerOf(b);
    for (const h of ['authorization', 'dpop', 'x-forwarded-client-cert']) expect(provider.includeRequestHeadersInCheck, h).toContain(h);
    expect(provider.pathPrefix).toBe('/envoy');
    expect(provider.failOpen ?? false).toBe(false);
    expect(provider.statusOnError, 'cnfguard\'s 503 stays a 503 (Envoy\'s default is 403)').toBe('503');
  },
  'istio: every identity header cnfguard sets goes upstream; challenges go downstream'(b: Bundle) {
    const config = cnfguardConfig(b);
    const provider = providerOf(b);
    for (const name of [...Object.values(config.headers), ...Object.keys(config.claimHeaders)]) expect(provider.headersToUpstreamOnAllow, name).toContain(name);
    for (const h of ['www-authenticate', 'content-type', 'dpop-nonce']) expect(provider.headersToDownstreamOnDeny, h).toContain(h);
  },
  'istio: kustomization.yaml lists exactly the kubectl resources (not mesh-config.yaml)'(b: Bundle) {
    const resources = kustomization.parse(b.kustomization).resources;
    expect([...resources].sort()).toEqual(b.files.filter((f) => f !== 'kustomization.yaml' && f !== MESH_CONFIG));
  },
} satisfies Record<string, (b: Bundle) => void>;

type CheckName = keyof typeof CHECKS;

const bundle = loadBundle();

describe('Istio manifests (k8s/istio/)', () => {
  it.each(Object.keys(CHECKS) as CheckName[])('%s', (name) => {
    CHECKS[name](bundle);
  });
});

// ------------------------------------------------------------------------------ mutations

type Mutable = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const ext = (b: Bundle): Mutable => (b.mesh as Mutable).spec.meshConfig.extensionProviders[0].envoyExtAuthzHttp;
const setConfig = (b: Bundle, edit: (text: string) => string) => {
  const cm = b.configMap as Mutable;
  cm.data['cnfguard.yaml'] = edit(cm.data['cnfguard.yaml']);
};

const MUTATIONS: [string, CheckName, (b: Bundle) => void][] = [
  ['a misspelt provider field', 'istio: every resource matches its strict schema', (b) => {
    const e = ext(b);
    e.includeRequestHeaderInCheck = e.includeRequestHeadersInCheck;
    delete e.includeRequestHeadersInCheck;
  }],
  ['action ALLOW instead of CUSTOM', 'istio: every resource matches its strict schema', (b) => void ((b.policy as Mutable).spec.action = 'ALLOW')],
  ['a misspelt kustomization field', 'istio: every resource matches its strict schema', (b) => void ((b.kustomization as Mutable).resource = [])],
  ['a misspelt ServiceEntry field', 'istio: every resource matches its strict schema', (b) => void ((b.serviceEntry as Mutable).spec.resolutions = 'STATIC')],
  ['PERMISSIVE mesh mTLS', 'istio: the checked pods take mesh mTLS only (STRICT), so no client XFCC passes on a plaintext connection', (b) => void ((b.peerAuthentication as Mutable).spec.mtls.mode = 'PERMISSIVE')],
  ['a plaintext port', 'istio: the checked pods take mesh mTLS only (STRICT), so no client XFCC passes on a plaintext connection', (b) => void ((b.peerAuthentication as Mutable).spec.portLevelMtls = { 8080: { mode: 'DISABLE' } })],
  ['STRICT for other pods', 'istio: the checked pods take mesh mTLS only (STRICT), so no client XFCC passes on a plaintext connection', (b) => void ((b.peerAuthentication as Mutable).spec.selector.matchLabels = { app: 'other' })],
  ['the policy names another provider', 'istio: the CUSTOM AuthorizationPolicy names a provider of the mesh config', (b) => void ((b.policy as Mutable).spec.provider.name = 'cnfgaurd')],
  ['the policy selects other pods', 'istio: the AuthorizationPolicy selects the pods of k8s/deployment.yaml', (b) => void ((b.policy as Mutable).spec.selector.matchLabels = { app: 'other' })],
  ['the provider port differs from decisionApi', 'istio: the provider calls the ServiceEntry, which is the pod loopback on the decisionApi port', (b) => void setConfig(b, (t) => t.replace('port: 9191', 'port: 9192'))],
  ['the provider calls another host', 'istio: the provider calls the ServiceEntry, which is the pod loopback on the decisionApi port', (b) => void (ext(b).service = 'cnfguard.default.svc.cluster.local')],
  ['no decisionApi', 'istio: the provider calls the ServiceEntry, which is the pod loopback on the decisionApi port', (b) => void setConfig(b, (t) => t.replace(/^ *decisionApi:.*$/m, ''))],
  ['the sidecar is not trusted', 'istio: the sidecar (127.0.0.1) is the trusted proxy, its XFCC the certificate header', (b) => void setConfig(b, (t) => t.replace('cidrs: [127.0.0.1/32]', 'cidrs: [10.0.0.0/8]'))],
  ['the certificate read from another header', 'istio: the sidecar (127.0.0.1) is the trusted proxy, its XFCC the certificate header', (b) => void setConfig(b, (t) => t.replace('header: x-forwarded-client-cert, format: xfcc', 'header: client-cert, format: rfc9440'))],
  ['dpop not in the check', 'istio: the check carries the token, the DPoP proof and XFCC, at /envoy, failing closed', (b) => void (ext(b).includeRequestHeadersInCheck = ['authorization', 'x-forwarded-client-cert'])],
  ['no path prefix', 'istio: the check carries the token, the DPoP proof and XFCC, at /envoy, failing closed', (b) => void delete ext(b).pathPrefix],
  ['status on error left at 403', 'istio: the check carries the token, the DPoP proof and XFCC, at /envoy, failing closed', (b) => void delete ext(b).statusOnError],
  ['fail open', 'istio: the check carries the token, the DPoP proof and XFCC, at /envoy, failing closed', (b) => void (ext(b).failOpen = true)],
  ['x-auth-dpop-jkt not sent upstream', 'istio: every identity header cnfguard sets goes upstream; challenges go downstream', (b) => void (ext(b).headersToUpstreamOnAllow = ext(b).headersToUpstreamOnAllow.filter((h: string) => h !== 'x-auth-dpop-jkt'))],
  ['a renamed identity header', 'istio: every identity header cnfguard sets goes upstream; challenges go downstream', (b) => void setConfig(b, (t) => `${t}headers: { subject: x-user }\n`)],
  ['mesh-config.yaml in kustomization', 'istio: kustomization.yaml lists exactly the kubectl resources (not mesh-config.yaml)', (b) => void (b.kustomization as Mutable).resources.push(MESH_CONFIG)],
];

describe('each Istio check fails when its artefacts disagree', () => {
  it('covers every check', () => {
    const covered = new Set(MUTATIONS.map(([, check]) => check));
    expect((Object.keys(CHECKS) as CheckName[]).filter((name) => !covered.has(name))).toEqual([]);
  });
  it.each(MUTATIONS)('%s -> %s', (_what, check, mutate) => {
    const copy = structuredClone(bundle);
    mutate(copy);
    expect(() => CHECKS[check](copy)).toThrow();
  });
});
