// A real OAuth authorization server (oidc-provider v9) for the demo and the end-to-end tests.
//
// It listens on HTTPS and requests (but does not require or verify) client certificates, so the
// certificate a client presents at the token endpoint ends up in the token's cnf["x5t#S256"]
// (RFC 8705 §3.1). Access tokens are opaque so that the resource server has to introspect them
// (RFC 7662), and an introspection counter lets tests prove caching by counting what reaches the AS.
//
// Test and demo use only: clients, secrets and the storage are in memory and hard-coded.
import { generateKeyPair, randomBytes } from 'node:crypto';
import type { KeyObject, X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
// @ts-expect-error -- oidc-provider ships no type declarations; the small surface used is typed below.
import Provider, { errors as oidcErrors } from 'oidc-provider';
import { Agent, request } from 'undici';
import { listen } from '../src/listen.ts';
import type { PemPair } from '../src/tls/dev-certs.ts';

export interface AuthorizationServerOptions {
  /** Server certificate and key for the AS's HTTPS listener. */
  tls: PemPair;
  /** Default '127.0.0.1'. */
  host?: string;
  /** Default 0 (an ephemeral port; read it back from `issuer`). */
  port?: number;
  /** Resource indicator and audience of every access token. Default 'https://rs.cnfguard.test/'. */
  resource?: string;
  /** Scopes the resource server offers; also what issueToken asks for by default. Default 'read write'. */
  scope?: string;
  /** Default 300. */
  accessTokenTtlSeconds?: number;
  /** A second resource whose access tokens are RFC 9068 JWTs (signed RS256 with the AS's JWKS). */
  jwtResource?: string;
  /** Private signing JWKs, newest first (the first signs). Default: one fresh RSA key. Pass `signingKeys()` of an earlier server to restart it. */
  signingKeys?: SigningJwk[];
  /**
   * RFC 9701: answer the resource server's (`rs`) introspection calls that ask for
   * `application/token-introspection+jwt` with a signed JWT (RS256, the AS's JWKS at `jwksUrl`).
   */
  jwtIntrospection?: boolean;
}

/** A private RS256 JWK with its kid (test and demo only). */
export type SigningJwk = Record<string, unknown> & { kid: string };

export interface IssueTokenOptions {
  /** Default 'app' (whose tokens are certificate-bound). */
  clientId?: string;
  /** Default: the registered secret of `clientId` when it is one of the built-in clients. */
  clientSecret?: string;
  /** Presented in the TLS handshake to the token endpoint; required for bound clients ('app'). */
  clientCert?: PemPair;
  /** Default: the server's `scope` option. */
  scope?: string;
  /** PEM trust anchor for the AS's server certificate. */
  caCert: string;
  /** RFC 8707 resource indicator; default the server's `resource`. */
  resource?: string;
  /**
   * Makes the token request's DPoP proof (RFC 9449 §5) for the token URL and method given: the
   * token is then bound to that key (cnf.jkt, token_type DPoP). The client brings its own DPoP
   * implementation. (oidc-provider refuses to bind one token by both mTLS and DPoP.)
   */
  dpopProof?: (htu: string, htm: string) => Promise<string>;
}

export interface AuthorizationServer {
  /** https://HOST:PORT with the port actually bound. */
  issuer: string;
  tokenUrl: string;
  introspectionUrl: string;
  /** The AS's public keys (JWKS): JWT access tokens and signed introspection answers. */
  jwksUrl: string;
  /** The resource indicator / audience the tokens are issued for. */
  resource: string;
  /** How many POSTs reached the introspection endpoint so far (authenticated or not). */
  introspectionCalls(): number;
  /**
   * Obtains a client_credentials access token over real (m)TLS with client_secret_basic.
   * Rejects with an Error carrying the AS's OAuth error when the AS refuses.
   */
  issueToken(opts: IssueTokenOptions): Promise<string>;
  /** Revokes an access token at once (it introspects as inactive from then on). */
  revoke(token: string): Promise<void>;
  /** The private signing keys, newest first. */
  signingKeys(): SigningJwk[];
  /** Key rotation: a new key signs from now on; the old ones stay published in the JWKS. Tokens issued so far stay valid. */
  rotateSigningKey(): Promise<void>;
  /** Closes the listener and every connection, idle keep-alive ones included. */
  stop(): Promise<void>;
}

/** Registered clients: id -> secret. */
export const AS_CLIENTS = {
  /** client_credentials; tokens bound to the certificate presented at the token endpoint. */
  app: 'app-secret',
  /** client_credentials; plain bearer tokens. */
  'plain-app': 'plain-app-secret',
  /** The resource server (cnfguard) that introspects. */
  rs: 'rs-secret',
} as const;

// ---- the slice of oidc-provider's API used here (the package has no types) ----

interface KoaContext {
  method: string;
  path: string;
  socket: { getPeerX509Certificate?: () => X509Certificate | undefined };
  type: string;
  body: unknown;
}

interface TokenModel {
  destroy(): Promise<void>;
}

interface OidcProvider {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  use(fn: (ctx: KoaContext, next: () => Promise<void>) => Promise<void>): void;
  pathFor(name: string): string;
  AccessToken: { find(value: string): Promise<TokenModel | undefined> };
  ClientCredentials: { find(value: string): Promise<TokenModel | undefined> };
}

// ---- storage: a minimal in-memory adapter (passing one keeps oidc-provider's dev-adapter warning away) ----

interface Stored {
  payload: Record<string, unknown>;
  expiresAt: number; // epoch ms; Infinity when the model has no expiry
}

function createMemoryAdapterFactory(): (model: string) => object {
  const store = new Map<string, Stored>();
  let writes = 0;

  const sweep = (): void => {
    const now = Date.now();
    for (const [key, entry] of store) if (entry.expiresAt <= now) store.delete(key);
  };
  const get = (key: string): Record<string, unknown> | undefined => {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  };
  const findBy = (model: string, field: string, value: string): Record<string, unknown> | undefined => {
    for (const [key, entry] of store) {
      if (key.startsWith(`${model}:`) && entry.payload[field] === value) return get(key);
    }
    return undefined;
  };

  return (model: string) => ({
    async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number): Promise<void> {
      if (++writes % 256 === 0) sweep();
      const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
      store.set(`${model}:${id}`, { payload, expiresAt });
    },
    async find(id: string): Promise<Record<string, unknown> | undefined> {
      return get(`${model}:${id}`);
    },
    async findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
      return findBy(model, 'uid', uid);
    },
    async findByUserCode(userCode: string): Promise<Record<string, unknown> | undefined> {
      return findBy(model, 'userCode', userCode);
    },
    async consume(id: string): Promise<void> {
      const payload = get(`${model}:${id}`);
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    },
    async destroy(id: string): Promise<void> {
      store.delete(`${model}:${id}`);
    },
    async revokeByGrantId(grantId: string): Promise<void> {
      for (const [key, entry] of store) if (entry.payload.grantId === grantId) store.delete(key);
    },
  });
}

// ---- helpers ----

function formEncode(value: string): string {
  return new URLSearchParams({ v: value }).toString().slice(2);
}

function basicAuth(id: string, secret: string): string {
  // RFC 6749 §2.3.1: form-urlencode both parts before base64.
  return `Basic ${Buffer.from(`${formEncode(id)}:${formEncode(secret)}`).toString('base64')}`;
}

async function newSigningKey(): Promise<SigningJwk> {
  const { privateKey } = await new Promise<{ privateKey: KeyObject }>((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: 2048 }, (err, _publicKey, privateKey) => {
      if (err) reject(err);
      else resolve({ privateKey });
    });
  });
  return { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: randomBytes(8).toString('hex') };
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/**
 * Starts the authorization server on HTTPS. The listener is bound first (port 0 by default) and the
 * Provider is then built with the issuer `https://HOST:PORT` that was actually bound.
 */
export async function startAuthorizationServer(opts: AuthorizationServerOptions): Promise<AuthorizationServer> {
  const host = opts.host ?? '127.0.0.1';
  const resource = opts.resource ?? 'https://rs.cnfguard.test/';
  const scope = opts.scope ?? 'read write';
  const ttl = opts.accessTokenTtlSeconds ?? 300;

  // Ask for a certificate in the handshake, but never fail it: binding needs only possession (RFC 8705 §6.2).
  const server = createServer({ key: opts.tls.key, cert: opts.tls.cert, requestCert: true, rejectUnauthorized: false });
  await listen(server, host, opts.port ?? 0);

  const { port } = server.address() as AddressInfo;
  const issuer = `https://${urlHost(host)}:${port}`;

  // One storage and one cookie key across key rotations, so that tokens issued before a rotation stay valid.
  const adapter = createMemoryAdapterFactory();
  const cookieKey = randomBytes(32).toString('base64url');
  let keys: SigningJwk[];
  let introspections = 0;
  const buildProvider = (): OidcProvider => {
    const built: OidcProvider = new Provider(issuer, {
      adapter,
      jwks: { keys },
      cookies: { keys: [cookieKey] },
      clients: [
        {
          client_id: 'app',
          client_secret: AS_CLIENTS.app,
          grant_types: ['client_credentials'],
          response_types: [],
          tls_client_certificate_bound_access_tokens: true,
        },
        {
          client_id: 'plain-app',
          client_secret: AS_CLIENTS['plain-app'],
          grant_types: ['client_credentials'],
          response_types: [],
        },
        {
          client_id: 'rs',
          client_secret: AS_CLIENTS.rs,
          grant_types: [],
          response_types: [],
          ...(opts.jwtIntrospection === true && { introspection_signed_response_alg: 'RS256' }),
        },
      ],
      // The defaults of these functions print "you SHOULD/MUST change it" notices on first use.
      clientBasedCORS: () => false,
      renderError: (ctx: KoaContext, out: Record<string, unknown>) => {
        ctx.type = 'json';
        ctx.body = out;
      },
      ttl: { AccessToken: ttl, ClientCredentials: ttl },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        // A DPoP header at the token endpoint binds the token to its key (cnf.jkt, RFC 9449 §5).
        dPoP: { enabled: true },
        // Any authenticated client may introspect any token. (The default policy differs only for
        // public clients, of which there are none; replacing it keeps its "SHOULD change" notice away.)
        introspection: { enabled: true, allowedPolicy: async () => true },
        jwtIntrospection: { enabled: opts.jwtIntrospection === true },
        mTLS: {
          enabled: true,
          certificateBoundAccessTokens: true,
          getCertificate: (ctx: KoaContext) => ctx.socket.getPeerX509Certificate?.(),
        },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => resource,
          getResourceServerInfo: (_ctx: unknown, indicator: string) => {
            if (opts.jwtResource !== undefined && indicator === opts.jwtResource) {
              return { scope, audience: opts.jwtResource, accessTokenFormat: 'jwt', accessTokenTTL: ttl, jwt: { sign: { alg: 'RS256' } } };
            }
            if (indicator !== resource) throw new oidcErrors.InvalidTarget();
            return { scope, audience: resource, accessTokenFormat: 'opaque', accessTokenTTL: ttl };
          },
        },
      },
    });
    const path = built.pathFor('introspection');
    built.use(async (ctx, next) => {
      if (ctx.method === 'POST' && ctx.path === path) introspections += 1;
      await next();
    });
    return built;
  };
  let provider: OidcProvider;
  try {
    keys = opts.signingKeys ?? [await newSigningKey()];
    provider = buildProvider();
  } catch (err) {
    server.closeAllConnections();
    server.close();
    throw err;
  }
  let handle = provider.callback();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => handle(req, res));
  const introspectionPath = provider.pathFor('introspection');

  const rotateSigningKey = async (): Promise<void> => {
    keys = [await newSigningKey(), ...keys];
    provider = buildProvider();
    handle = provider.callback();
  };

  const tokenUrl = new URL(provider.pathFor('token'), issuer).href;
  const introspectionUrl = new URL(introspectionPath, issuer).href;
  const jwksUrl = new URL(provider.pathFor('jwks'), issuer).href;

  const issueToken = async (o: IssueTokenOptions): Promise<string> => {
    const clientId = o.clientId ?? 'app';
    const clientSecret = o.clientSecret ?? (AS_CLIENTS as Record<string, string>)[clientId];
    if (clientSecret === undefined) throw new Error(`issueToken: no secret given for client ${clientId}`);
    const dispatcher = new Agent({
      connect: { ca: o.caCert, ...(o.clientCert ? { cert: o.clientCert.cert, key: o.clientCert.key } : {}) },
    });
    try {
      const res = await request(tokenUrl, {
        method: 'POST',
        dispatcher,
        headers: {
          authorization: basicAuth(clientId, clientSecret),
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          ...(o.dpopProof !== undefined && { dpop: await o.dpopProof(tokenUrl, 'POST') }),
        },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: o.scope ?? scope, ...(o.resource !== undefined && { resource: o.resource }) }).toString(),
      });
      const body = (await res.body.json()) as Record<string, unknown>;
      if (res.statusCode !== 200 || typeof body.access_token !== 'string') {
        throw new Error(`token endpoint answered ${res.statusCode}: ${String(body.error)}: ${String(body.error_description)}`);
      }
      return body.access_token;
    } finally {
      await dispatcher.close();
    }
  };

  const revoke = async (token: string): Promise<void> => {
    const found = (await provider.ClientCredentials.find(token)) ?? (await provider.AccessToken.find(token));
    await found?.destroy();
  };

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= new Promise<void>((resolve, reject) => {
      server.close((err) => (err ? reject(err) : resolve()));
      server.closeAllConnections();
    });
    return stopped;
  };

  return {
    issuer,
    tokenUrl,
    introspectionUrl,
    jwksUrl,
    resource,
    introspectionCalls: () => introspections,
    issueToken,
    revoke,
    signingKeys: () => [...keys],
    rotateSigningKey,
    stop,
  };
}
