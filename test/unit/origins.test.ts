/** The origins a DPoP `htu` may name without `publicOrigin` (proof/origins.ts), against real certificates. */
import { beforeAll, describe, expect, it } from 'vitest';
import { configWarnings } from '../../src/config/checks.ts';
import { configSchema } from '../../src/config/schema.ts';
import { createOriginCheck, originOf } from '../../src/proof/origins.ts';
import { createCertificateAuthority, issueServerCertificate, type PemPair } from '../../src/tls/dev-certs.ts';

let wildcard: PemPair;
let plain: PemPair;

beforeAll(() => {
  const ca = createCertificateAuthority('origins test CA');
  wildcard = issueServerCertificate(ca, { dns: ['api.example', '*.svc.example'], ips: ['10.0.0.7', '::1'] });
  plain = issueServerCertificate(ca, { dns: ['next.example'], ips: [] });
});

describe('createOriginCheck', () => {
  it('accepts the names of the server certificate on the listener port or none, and nothing else', () => {
    const check = createOriginCheck({ certificate: () => `${wildcard.cert}\n${plain.cert}`, port: () => 8443, routeHosts: [], publicOrigins: [] });
    const accepted = ['https://api.example', 'https://api.example:8443', 'https://a.svc.example', 'https://10.0.0.7', 'https://[::1]:8443', 'https://api.example.'];
    const refused = [
      'https://api.example:9443', // another port: another resource server
      'http://api.example', // never http: the listener speaks TLS only
      'https://other.example',
      'https://svc.example', // a wildcard does not cover its own suffix
      'https://a.b.svc.example', // nor two labels
      'https://10.0.0.8',
      'https://[::2]',
      'https://next.example', // the chain's second certificate is not the server's
      'not an origin',
    ];
    expect(accepted.filter((origin) => !check(origin))).toEqual([]);
    expect(refused.filter((origin) => check(origin))).toEqual([]);
  });

  it("accepts routes' hosts and configured public origins; follows a certificate reload", () => {
    let pem = wildcard.cert;
    const check = createOriginCheck({ certificate: () => pem, port: () => 8443, routeHosts: [undefined, 'routed.example', '*.tenants.example'], publicOrigins: [undefined, 'https://public.example:444'] });
    expect(['https://routed.example', 'https://x.tenants.example:8443', 'https://public.example:444'].every(check)).toBe(true);
    expect(['https://routed.example:444', 'https://public.example'].some(check)).toBe(false);
    expect(check('https://api.example')).toBe(true);
    pem = plain.cert;
    expect(check('https://api.example')).toBe(false);
    expect(check('https://next.example')).toBe(true);
  });

  it('refuses every origin before the listener has a port', () => {
    expect(createOriginCheck({ certificate: () => wildcard.cert, port: () => undefined, routeHosts: [], publicOrigins: [] })('https://api.example')).toBe(false);
  });
});

it('originOf cuts a normalised URI after its authority', () => {
  expect(originOf('https://api.example:8443/a/b')).toBe('https://api.example:8443');
  expect(originOf('https://[::1]/')).toBe('https://[::1]');
  expect(originOf('https://api.example')).toBe('https://api.example');
});

describe('cnfguard check', () => {
  const settings = (extra: Record<string, unknown>) =>
    configSchema.parse({ tls: { cert: 'c', key: 'k' }, introspection: { url: 'https://as.example/introspect', clientId: 'rs', clientSecret: 's' }, upstream: 'http://127.0.0.1:1', ...extra });
  const paths = (extra: Record<string, unknown>) => configWarnings(settings(extra)).filter((w) => w.path.endsWith('publicOrigin')).map((w) => w.path);

  it('warns on each DPoP route without publicOrigin, and only those', () => {
    expect(paths({})).toEqual([]);
    expect(paths({ methods: ['dpop'] })).toEqual(['publicOrigin']);
    expect(paths({ routes: [{ pathPrefix: '/a', methods: ['mtls', 'dpop'] }, { pathPrefix: '/b' }, { pathPrefix: '/c', methods: ['dpop'], publicOrigin: 'https://api.example' }] })).toEqual(['routes[0].publicOrigin']);
    expect(paths({ methods: ['dpop'], publicOrigin: 'https://api.example', routes: [{ pathPrefix: '/a' }] })).toEqual([]);
    expect(configWarnings(settings({ methods: ['dpop'] })).find((w) => w.path === 'publicOrigin')?.message).toMatch(/^unset on a DPoP route: .*set it to the origin clients call/);
  });
});
