/**
 * The signed identity for the upstream: one JWT per forwarded request, `typ: JWT`, `kid` the key's
 * RFC 7638 thumbprint; claims `iss`, `aud`, `iat`, `exp` (iat + lifetime), `sub` (when the token
 * has one), `client_id`, `scope`, `cnf_method` (the methods verified for this request, in the order
 * mtls dpop httpsig, or `none`) and the token's `cnf` members those methods verified.
 *
 * The hot path does not sign every request: an assertion is kept with the validated token's answer
 * (a WeakMap on the cached TokenInfo, so it lives exactly as long as the token cache keeps that
 * answer, and a token's hash is never needed twice), per route and what it says, and reused while
 * more than half its lifetime remains and the key has not changed.
 */
import type { TokenInfo } from '../introspection/token-info.ts';
import { cnfMembersOf, PROOF_METHOD_IDS, PROOF_METHODS, type ProofMethodId } from '../proof/registry.ts';
import type { AssertionKey, AssertionKeyRing } from './keys.ts';

/** The order `cnf_method` lists verified methods in: the contract's (mtls dpop httpsig), which is the registry's. */
const METHOD_ORDER: readonly string[] = PROOF_METHOD_IDS;
/** Every `cnf` member a method verifies (httpsig: `jwk` or `htsk`). */
const CNF_MEMBERS: ReadonlyMap<string, readonly string[]> = new Map(PROOF_METHODS.map((method) => [method.id, cnfMembersOf(method)]));

export interface AssertionRoute {
  readonly id: string;
  readonly assertion: { readonly audience: string; readonly lifetimeSeconds: number } | undefined;
}

export interface AssertionIssuer {
  /** The request header that carries it (`assertion.header`). */
  readonly header: string;
  /** The assertion for an allowed request on `route`, or undefined when the route has none (or no key is loaded). */
  issue(token: TokenInfo, route: AssertionRoute, verifiedBy: readonly ProofMethodId[] | undefined): string | undefined;
}

interface Issued {
  readonly jwt: string;
  readonly kid: string;
  /** The `cnf_method` it says. */
  readonly method: string;
  /** Milliseconds since the epoch: from here on a fresh one is signed. */
  readonly renewAt: number;
}

export interface AssertionIssuerOptions {
  ring: AssertionKeyRing;
  issuer: string;
  header: string;
  /** Milliseconds since the epoch. */
  now: () => number;
}

const encodedHeaders = new WeakMap<AssertionKey, string>();
function headerOf(key: AssertionKey): string {
  let encoded = encodedHeaders.get(key);
  if (encoded === undefined) {
    encoded = Buffer.from(JSON.stringify({ alg: key.algorithm, kid: key.kid, typ: 'JWT' })).toString('base64url');
    encodedHeaders.set(key, encoded);
  }
  return encoded;
}

/** The verified methods in the contract's order (no allocation for the common single method). */
function orderedMethods(verifiedBy: readonly ProofMethodId[] | undefined): readonly string[] {
  if (verifiedBy === undefined || verifiedBy.length < 2) return verifiedBy ?? [];
  return [...verifiedBy].sort((a, b) => METHOD_ORDER.indexOf(a) - METHOD_ORDER.indexOf(b));
}

/** The token's `cnf` members the verified methods checked (signing only). */
function verifiedCnf(token: TokenInfo, methods: readonly string[]): Record<string, unknown> | undefined {
  if (methods.length === 0) return undefined;
  const cnf: Record<string, unknown> = {};
  for (const method of methods) {
    for (const member of CNF_MEMBERS.get(method) ?? []) {
      if (token.cnf !== undefined && Object.hasOwn(token.cnf, member)) cnf[member] = token.cnf[member];
    }
  }
  return cnf;
}

export function createAssertionIssuer(options: AssertionIssuerOptions): AssertionIssuer {
  const { ring, issuer, now } = options;
  // Per cached token answer, per route object (a reload makes new ones): the assertion last issued.
  const issued = new WeakMap<TokenInfo, Map<AssertionRoute, Issued>>();
  return {
    header: options.header,
    issue(token, route, verifiedBy) {
      const settings = route.assertion;
      const key = ring.current;
      if (settings === undefined || key === undefined) return undefined;
      const t = now();
      const methods = orderedMethods(verifiedBy);
      const method = methods.length === 0 ? 'none' : methods.length === 1 ? (methods[0] as string) : methods.join(' ');
      let forToken = issued.get(token);
      const kept = forToken?.get(route);
      if (kept !== undefined && kept.method === method && kept.kid === key.kid && t < kept.renewAt) return kept.jwt;
      const cnf = verifiedCnf(token, methods);
      const iat = Math.floor(t / 1000);
      const exp = iat + settings.lifetimeSeconds;
      const claims = {
        iss: issuer,
        aud: settings.audience,
        iat,
        exp,
        ...(token.subject !== undefined && { sub: token.subject }),
        ...(token.clientId !== undefined && { client_id: token.clientId }),
        ...(token.scope !== undefined && { scope: token.scope }),
        cnf_method: method,
        ...(cnf !== undefined && { cnf }),
      };
      const input = `${headerOf(key)}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
      const jwt = `${input}.${key.sign(input)}`;
      if (forToken === undefined) {
        forToken = new Map();
        issued.set(token, forToken);
      }
      // Reused while more than half the lifetime remains (never after the token's own exp).
      const renewAt = Math.min((iat + settings.lifetimeSeconds / 2) * 1000, token.exp === undefined ? Infinity : token.exp * 1000);
      forToken.set(route, { jwt, kid: key.kid, method, renewAt });
      return jwt;
    },
  };
}
