/**
 * The names of the headers cnfguard sets on the upstream request (managed headers): the identity
 * headers (`headers.*`, `routes[].headers.*`), the claim headers (`claimHeaders`,
 * `routes[].claimHeaders`) and `assertion.header`. A name that is the request's framing, a
 * credential, a header cnfguard sets for itself, or another managed header of the same route
 * would break every request or overwrite what it names; `check` and `run` refuse it, naming the
 * key. (Each name is already an RFC 9110 token, lower-cased: schema-fields.ts; so no pseudo-header.)
 */
import type * as z from 'zod';
import { FORWARDING_HEADERS } from '../forwarding-headers.ts';
import { formatPath } from './problems.ts';

/** Framing, routing and connection-specific fields (RFC 9110 §6.4, §7.2, §7.6.1): the request breaks without them as they are. */
const FRAMING = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'expect', 'content-length', 'content-type', 'content-encoding', 'host'] as const;

/** The request's credentials and proofs: the token, the DPoP proof, a signature and what it covers, a session. */
const CREDENTIALS = ['authorization', 'proxy-authorization', 'dpop', 'signature', 'signature-input', 'content-digest', 'cookie'] as const;

/** Set by cnfguard itself on every forwarded request (the forwarding headers, and tracing's): one would overwrite the other. */
const SET_BY_CNFGUARD = [...FORWARDING_HEADERS, 'traceparent', 'tracestate'];

/** Every name no managed header may take, with why (exported for the test that keeps it in step with the edges' lists). */
export const RESERVED_HEADER_NAMES: ReadonlyMap<string, string> = new Map<string, string>([
  ...FRAMING.map((name): [string, string] => [name, 'a framing or connection header of the request: the upstream request would break (or be refused) with cnfguard\'s value in it']),
  ...CREDENTIALS.map((name): [string, string] => [name, "a credential of the client's request: cnfguard's value would replace it"]),
  ...SET_BY_CNFGUARD.map((name): [string, string] => [name, 'a header cnfguard sets itself on every forwarded request: one value would overwrite the other']),
]);

/** The slots of `headers` and `routes[].headers`, with their default names (schema-fields.ts). */
const DEFAULT_NAMES: Readonly<Record<string, string>> = {
  subject: 'x-auth-subject',
  clientId: 'x-auth-client-id',
  scope: 'x-auth-scope',
  certThumbprint: 'x-auth-cert-thumbprint',
  clientCert: 'x-forwarded-client-cert',
  binding: 'x-auth-binding',
  dpopThumbprint: 'x-auth-dpop-jkt',
};
const IDENTITY_SLOTS = Object.keys(DEFAULT_NAMES);

/** A top-level identity header left at its default name (the operator did not choose it). */
function isDefault(header: Managed): boolean {
  return header.slot !== undefined && header.path[0] === 'headers' && DEFAULT_NAMES[header.slot] === header.name;
}

interface Managed {
  /** The YAML path that names it. */
  path: (string | number)[];
  name: string;
  /** The identity slot, for an identity header. */
  slot?: string;
}

type HeaderRecord = Readonly<Partial<Record<string, string | undefined>>>;

export interface HeaderNameSettings {
  headers: HeaderRecord;
  claimHeaders: Readonly<Record<string, string>>;
  assertion?: { header: string } | undefined;
  trustedProxies: readonly { header: string }[];
  routes: readonly { headers?: HeaderRecord | undefined; claimHeaders?: Readonly<Record<string, string>> | undefined; assertion?: unknown }[];
}

function identityHeaders(headers: HeaderRecord | undefined, at: (string | number)[]): Managed[] {
  return IDENTITY_SLOTS.flatMap((slot) => {
    const name = headers?.[slot];
    return name === undefined ? [] : [{ path: [...at, slot], name: name.toLowerCase(), slot }];
  });
}

function claimHeaders(mapping: Readonly<Record<string, string>> | undefined, at: (string | number)[]): Managed[] {
  return Object.keys(mapping ?? {}).map((name) => ({ path: [...at, name], name: name.toLowerCase() }));
}

/** What is wrong with one managed name on its own, if anything. */
function problemOf(header: Managed, trustedProxies: readonly { header: string }[]): string | undefined {
  const reserved = RESERVED_HEADER_NAMES.get(header.name);
  if (reserved !== undefined) return `${header.name} is ${reserved}; choose another name, such as x-auth-…`;
  // The certificate header of a front: only clientCert may take it (cnfguard's XFCC replaces the front's, as Envoy does).
  const proxy = trustedProxies.findIndex((p) => p.header.toLowerCase() === header.name);
  if (proxy !== -1 && header.slot !== 'clientCert') return `${header.name} is trustedProxies[${proxy}].header, the client certificate a front passes; choose another name`;
  return undefined;
}

/**
 * Refuses managed header names that break requests or overwrite another header, and two managed
 * headers of one route with the same name (case-insensitive). A clash between two inherited names
 * is reported once, at the top level; one a route brings in, at the route's key.
 */
export function checkHeaderNames(value: HeaderNameSettings, ctx: z.RefinementCtx): void {
  const assertion: Managed[] = value.assertion === undefined ? [] : [{ path: ['assertion', 'header'], name: value.assertion.header.toLowerCase() }];
  const top = [...identityHeaders(value.headers, ['headers']), ...claimHeaders(value.claimHeaders, ['claimHeaders'])];
  const own = value.routes.map((route, index) => [...identityHeaders(route.headers, ['routes', index, 'headers']), ...claimHeaders(route.claimHeaders, ['routes', index, 'claimHeaders'])]);
  for (const header of [...top, ...assertion, ...own.flat()]) {
    const message = problemOf(header, value.trustedProxies);
    if (message !== undefined) ctx.addIssue({ code: 'custom', path: header.path, message });
  }
  const clashes = (managed: Managed[], reportable: (header: Managed) => boolean): void => {
    const seen = new Map<string, Managed>();
    for (const header of managed) {
      const first = seen.get(header.name);
      if (first === undefined) seen.set(header.name, header);
      else if (reportable(header) || reportable(first)) {
        // Reported at the key the operator set: not at a slot left at its default name.
        const blame = reportable(header) && !(isDefault(header) && reportable(first) && !isDefault(first)) ? header : first;
        const [earlier, later] = blame === header ? [first, header] : [header, first];
        ctx.addIssue({ code: 'custom', path: later.path, message: `${header.name} is also ${formatPath(earlier.path)}: two headers of one request with one name, one value overwriting the other; give each its own` });
      }
    }
  };
  clashes([...top, ...assertion], () => true);
  value.routes.forEach((route, index) => {
    const routeOwn = own[index] ?? [];
    const slots = new Set(routeOwn.flatMap((h) => (h.slot === undefined ? [] : [h.slot])));
    // The route's effective names: its own identity slots over the top level's; its claimHeaders instead of the top level's.
    const inheritedIdentity = top.filter((h) => h.slot !== undefined && !slots.has(h.slot));
    const inheritedClaims = route.claimHeaders === undefined ? top.filter((h) => h.slot === undefined) : [];
    const routeAssertion = route.assertion === false ? [] : assertion;
    clashes([...inheritedIdentity, ...inheritedClaims, ...routeAssertion, ...routeOwn], (h) => routeOwn.includes(h));
  });
}
