/**
 * RFC 9421 (HTTP Message Signatures) mechanics for a request verifier, with no policy: the
 * `Signature-Input` and `Signature` dictionaries (RFC 9651, parsed by `structured-headers`), the
 * signature base (§2.5) over derived components (§2.2) and fields (§2.1), the signature algorithms
 * (§3.3) and `Content-Digest` (RFC 9530). What a profile requires of a signature (components,
 * parameters, keys) is httpsig.ts's.
 *
 * Two kinds of failure: {@link SignatureSyntaxError} (a field that does not parse as a structured
 * field: the request is malformed) and {@link SignatureBaseError} (a signature whose base cannot be
 * built: it does not verify). Neither carries field values.
 */
import { createHash, timingSafeEqual, verify as cryptoVerify, constants, type KeyObject } from 'node:crypto';
import { parseDictionary, serializeInnerList, serializeItem, Token, type BareItem, type Parameters } from 'structured-headers';

/** A field that does not parse as the RFC 9651 structured field it must be. */
export class SignatureSyntaxError extends Error {
  override name = 'SignatureSyntaxError';
}

/** A covered component that cannot be resolved, or a signature entry that is not well formed. */
export class SignatureBaseError extends Error {
  override name = 'SignatureBaseError';
}

/** The request as the signer saw it. */
export interface SignedRequest {
  readonly method: string;
  /** The absolute URI the client called (`@target-uri`, §2.2.2): scheme, authority, path and query. */
  readonly targetUri: string;
  /** Every line of a header field, by lower-case name. */
  readonly fieldLines: (name: string) => readonly string[] | undefined;
}

export interface CoveredComponent {
  /** The component name, lower case (`@method`, `content-digest`). */
  readonly name: string;
  readonly params: Parameters;
}

/** One labelled signature: its `Signature-Input` member and its `Signature` bytes. */
export interface SignatureEntry {
  readonly label: string;
  readonly components: readonly CoveredComponent[];
  readonly params: Parameters;
  /** The `@signature-params` value: the member's inner list, serialized (§2.3). */
  readonly signatureParams: string;
  readonly signature: Buffer;
}

function dictionaryOf(lines: readonly string[], field: string): ReturnType<typeof parseDictionary> {
  try {
    // RFC 9651 §4.2: several lines of one field are parsed as their combination.
    return parseDictionary(lines.join(', '));
  } catch {
    throw new SignatureSyntaxError(`${field} is not a structured dictionary`);
  }
}

/**
 * The labelled signatures of a request (§4.1, §4.2). Throws {@link SignatureSyntaxError} when a
 * field does not parse, or a member has the wrong shape (an input that is no inner list of
 * strings, a signature that is no byte sequence), and {@link SignatureBaseError} when a label has
 * no partner. Undefined when the request carries neither field.
 */
export function signatureEntries(inputLines: readonly string[] | undefined, signatureLines: readonly string[] | undefined): SignatureEntry[] | undefined {
  if (inputLines === undefined && signatureLines === undefined) return undefined;
  const inputs = dictionaryOf(inputLines ?? [], 'Signature-Input');
  const signatures = dictionaryOf(signatureLines ?? [], 'Signature');
  const entries: SignatureEntry[] = [];
  for (const [label, member] of inputs) {
    const [items, params] = member;
    if (!Array.isArray(items)) throw new SignatureSyntaxError('a Signature-Input member is not an inner list');
    const components = items.map(([value, componentParams]) => {
      if (typeof value !== 'string') throw new SignatureSyntaxError('a covered component is not a string');
      return { name: value, params: componentParams };
    });
    const signature = signatures.get(label);
    if (signature === undefined) throw new SignatureBaseError('a Signature-Input label has no Signature');
    const [bytes] = signature;
    if (!(bytes instanceof ArrayBuffer)) throw new SignatureSyntaxError('a Signature member is not a byte sequence');
    entries.push({ label, components, params, signatureParams: innerListText(items, params), signature: Buffer.from(bytes) });
  }
  for (const label of signatures.keys()) if (!inputs.has(label)) throw new SignatureBaseError('a Signature label has no Signature-Input');
  return entries;
}

/** RFC 9651 §4.1.6: a bare item as text, for the items a parsed field holds; undefined for a kind left to the library. */
function bareItemText(value: unknown): string | undefined {
  if (typeof value === 'string') return value.includes('"') || value.includes('\\') ? `"${value.replace(/[\\"]/g, '\\$&')}"` : `"${value}"`;
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : undefined;
  if (value instanceof Token) return value.toString();
  if (typeof value === 'boolean') return value ? '?1' : '?0';
  return undefined;
}

function parametersText(params: Parameters): string | undefined {
  let text = '';
  for (const [key, value] of params) {
    // §4.1.1.2: a true parameter is its key alone.
    if (value === true) text += `;${key}`;
    else {
      const item = bareItemText(value);
      if (item === undefined) return undefined;
      text += `;${key}=${item}`;
    }
  }
  return text;
}

/**
 * `@signature-params` (§2.3): the inner list re-serialized (RFC 9651 §4.1.1.1). Strings, integers,
 * tokens and booleans, which a parsed Signature-Input holds, are written here (the hot path);
 * anything else by the library's serializer.
 */
function innerListText(items: readonly (readonly [unknown, Parameters])[], params: Parameters): string {
  let text = '(';
  for (const [index, [value, itemParams]] of items.entries()) {
    const item = bareItemText(value);
    const itemParamsText = parametersText(itemParams);
    if (item === undefined || itemParamsText === undefined) return serializeInnerList([items as [BareItem, Parameters][], params]);
    text += `${index === 0 ? '' : ' '}${item}${itemParamsText}`;
  }
  const listParams = parametersText(params);
  return listParams === undefined ? serializeInnerList([items as [BareItem, Parameters][], params]) : `${text})${listParams}`;
}

/** The parts of an absolute URI the derived components read, as the client spelled them. */
function uriParts(targetUri: string): { scheme: string; authority: string; path: string; query: string | undefined } {
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?/.exec(targetUri);
  if (match === null) throw new SignatureBaseError('the target URI is not absolute');
  const scheme = (match[1] as string).toLowerCase();
  // §2.2.3: the authority in lower case, without a default port.
  let authority = (match[2] as string).toLowerCase();
  if ((scheme === 'https' && authority.endsWith(':443')) || (scheme === 'http' && authority.endsWith(':80'))) authority = authority.slice(0, authority.lastIndexOf(':'));
  return { scheme, authority, path: match[3] === '' ? '/' : (match[3] as string), query: match[4] };
}

/** §2.2.8: a query parameter's name and value re-encoded after form decoding. */
function queryParamValues(query: string | undefined, name: string): string[] {
  const values: string[] = [];
  for (const [key, value] of new URLSearchParams(query ?? '')) if (key === name) values.push(encodeURIComponent(value));
  return values;
}

/** A derived component's value (§2.2); `@query-param` may have several (one base line each). */
function derivedValues(component: CoveredComponent, request: SignedRequest): string[] {
  const uri = (): ReturnType<typeof uriParts> => uriParts(request.targetUri);
  switch (component.name) {
    case '@method':
      return [request.method];
    case '@target-uri':
      return [request.targetUri];
    case '@authority':
      return [uri().authority];
    case '@scheme':
      return [uri().scheme];
    case '@request-target': {
      const { path, query } = uri();
      return [query === undefined ? path : `${path}?${query}`];
    }
    case '@path':
      return [uri().path];
    case '@query':
      return [`?${uri().query ?? ''}`];
    case '@query-param': {
      const name = component.params.get('name');
      if (typeof name !== 'string') throw new SignatureBaseError('@query-param without a name');
      let decoded: string;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        throw new SignatureBaseError('@query-param name is not percent-encoded text');
      }
      const values = queryParamValues(uri().query, decoded);
      if (values.length === 0) throw new SignatureBaseError('@query-param names no parameter of the query');
      return values;
    }
    default:
      throw new SignatureBaseError(`derived component ${component.name.slice(0, 32)} is not supported`);
  }
}

/** A field's value (§2.1): its lines, each trimmed, joined by ", "; `bs` and `key` as §2.1.3 and §2.1.2 say. */
function fieldValue(component: CoveredComponent, request: SignedRequest): string {
  const lines = request.fieldLines(component.name);
  if (lines === undefined || lines.length === 0) throw new SignatureBaseError('a covered field is absent');
  for (const name of component.params.keys()) if (name !== 'key' && name !== 'bs') throw new SignatureBaseError(`component parameter ${name.slice(0, 8)} is not supported`);
  const key = component.params.get('key');
  if (component.params.get('bs') === true) {
    if (key !== undefined) throw new SignatureBaseError('bs and key together');
    return lines.map((line) => `:${Buffer.from(line.trim(), 'latin1').toString('base64')}:`).join(', ');
  }
  const value = lines.map((line) => line.trim()).join(', ');
  if (key === undefined) return value;
  if (typeof key !== 'string') throw new SignatureBaseError('key is not a string');
  let member;
  try {
    member = parseDictionary(value).get(key);
  } catch {
    throw new SignatureBaseError('a covered dictionary field does not parse');
  }
  if (member === undefined) throw new SignatureBaseError('a covered dictionary member is absent');
  const [item, params] = member;
  return Array.isArray(item) ? serializeInnerList([item, params]) : serializeItem([item, params]);
}

/** A component name that serializes as itself in quotes (no `"` or `\\` to escape). */
const PLAIN_NAME = /^@?[a-z0-9!#$%&'*+.^_`|~-]+$/;

/**
 * The signature base (§2.5): one line per covered component, `"identifier": value`, then the
 * `@signature-params` line, without a trailing newline. Throws {@link SignatureBaseError} for a
 * component named twice, one that cannot be resolved, or a value with a newline.
 */
export function signatureBase(entry: Pick<SignatureEntry, 'components' | 'signatureParams'>, request: SignedRequest): string {
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const component of entry.components) {
    // A plain name (the usual case) is its own quoted form; anything else goes through the serializer.
    const identifier = component.params.size === 0 && PLAIN_NAME.test(component.name) ? `"${component.name}"` : serializeItem([component.name, component.params]);
    if (seen.has(identifier)) throw new SignatureBaseError('a component is covered twice');
    seen.add(identifier);
    if (component.name === '@signature-params' || component.name === '@status') throw new SignatureBaseError(`${component.name} cannot be covered by a request signature`);
    const values = component.name.startsWith('@') ? derivedValues(component, request) : [fieldValue(component, request)];
    for (const value of values) {
      if (/[\r\n]/.test(value)) throw new SignatureBaseError('a component value has a newline');
      lines.push(`${identifier}: ${value}`);
    }
  }
  lines.push(`"@signature-params": ${entry.signatureParams}`);
  return lines.join('\n');
}

/** The RFC 9421 §6.2 asymmetric algorithms this verifier implements. */
export const SIGNATURE_ALGORITHMS = ['ed25519', 'ecdsa-p256-sha256', 'ecdsa-p384-sha384', 'rsa-pss-sha512'] as const;
export type SignatureAlgorithm = (typeof SIGNATURE_ALGORITHMS)[number];

/** What each algorithm needs of the key (`asymmetricKeyType`, EC curve) and how it verifies (§3.3). */
const ALGORITHM_VERIFY: Readonly<Record<SignatureAlgorithm, { keyType: string; curve?: string; verify: (base: Buffer, key: KeyObject, signature: Buffer) => boolean }>> = {
  ed25519: { keyType: 'ed25519', verify: (base, key, signature) => cryptoVerify(null, base, key, signature) },
  // §3.3.4: raw r‖s, not DER.
  'ecdsa-p256-sha256': { keyType: 'ec', curve: 'prime256v1', verify: (base, key, signature) => signature.length === 64 && cryptoVerify('sha256', base, { key, dsaEncoding: 'ieee-p1363' }, signature) },
  'ecdsa-p384-sha384': { keyType: 'ec', curve: 'secp384r1', verify: (base, key, signature) => signature.length === 96 && cryptoVerify('sha384', base, { key, dsaEncoding: 'ieee-p1363' }, signature) },
  // §3.3.1: RSASSA-PSS, SHA-512, MGF1 SHA-512, 64-byte salt.
  'rsa-pss-sha512': { keyType: 'rsa', verify: (base, key, signature) => cryptoVerify('sha512', base, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 }, signature) },
};

/** Whether `key` is of the kind `algorithm` signs with (type, curve; RSA of at least 2048 bits). */
export function keyFitsAlgorithm(algorithm: SignatureAlgorithm, key: KeyObject): boolean {
  const { keyType, curve } = ALGORITHM_VERIFY[algorithm];
  if (key.type !== 'public') return false;
  const type = key.asymmetricKeyType === 'rsa-pss' ? 'rsa' : key.asymmetricKeyType;
  if (type !== keyType) return false;
  if (curve !== undefined && key.asymmetricKeyDetails?.namedCurve !== curve) return false;
  return keyType !== 'rsa' || (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048;
}

/** Verifies `signature` over the signature base with `key` under `algorithm` (the key must fit it). */
export function verifySignatureBytes(algorithm: SignatureAlgorithm, key: KeyObject, base: string, signature: Buffer): boolean {
  try {
    return ALGORITHM_VERIFY[algorithm].verify(Buffer.from(base, 'utf8'), key, signature);
  } catch {
    return false;
  }
}

/** RFC 9530 §5 algorithms, by their registered key. */
const DIGESTS: Readonly<Record<string, string>> = { 'sha-256': 'sha256', 'sha-512': 'sha512' };

/**
 * RFC 9530: whether a `Content-Digest` value matches `body`. Every member with a known algorithm
 * (`sha-256`, `sha-512`) must match and at least one must be present; members of other algorithms
 * are ignored. Throws {@link SignatureSyntaxError} when the field does not parse.
 */
export function contentDigestMatches(lines: readonly string[], body: Buffer): boolean {
  const members = dictionaryOf(lines, 'Content-Digest');
  let checked = 0;
  for (const [name, [value]] of members) {
    const hash = DIGESTS[name];
    if (hash === undefined) continue;
    if (!(value instanceof ArrayBuffer)) throw new SignatureSyntaxError('a Content-Digest member is not a byte sequence');
    const expected = createHash(hash).update(body).digest();
    const given = Buffer.from(value);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return false;
    checked++;
  }
  return checked > 0;
}
