/**
 * The URI a DPoP proof names (`htu`, RFC 9449 §4.2, §4.3 step 9): the one the request must carry,
 * and both compared after RFC 3986 §6.2.2 normalisation.
 */
import { lazyLru } from '../lru.ts';

const UNRESERVED = /[A-Za-z0-9\-._~]/;
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL_OR_SPACE = /[\u0000-\u0020\u007f\s]/;

/**
 * RFC 3986 §6.2.2 syntax-based normalisation of an http(s) URI, without query and fragment:
 * scheme and host lower case, default port dropped, percent-encodings upper case and decoded when
 * they encode an unreserved character, dot segments removed, empty path as `/`. Undefined when
 * the text is not an absolute http(s) URI.
 */
export function normalizeHtu(uri: string): string | undefined {
  // Whitespace and control characters (URL would silently strip some of them).
  if (uri.length > 8192 || CONTROL_OR_SPACE.test(uri)) return undefined;
  // Decode encoded unreserved characters first, so that `%2E%2E` is a dot segment as RFC 3986
  // §6.2.2 orders it; upper-case the rest.
  const text = uri.replace(/%([0-9A-Fa-f]{2})/g, (_match, hex: string) => {
    const char = String.fromCharCode(Number.parseInt(hex, 16));
    return UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
  });
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username !== '' || url.password !== '') return undefined;
  return `${url.protocol}//${url.host}${url.pathname}`;
}

export type HtuNormalizer = (uri: string) => string | undefined;

/** URIs longer than this are normalised every time rather than remembered. */
const MAX_REMEMBERED_URI_CHARS = 1024;

/**
 * {@link normalizeHtu}, remembered for the URIs of the last `maxEntries` requests: a client calls
 * the same few URIs again and again, and the URL parse is most of the cost. Long URIs are not kept.
 * Made where the DPoP dependencies are composed (src/runtime.ts), never a module global.
 */
export function createHtuNormalizer(maxEntries = 1000): HtuNormalizer {
  const normalized = lazyLru<string, string | false>(maxEntries);
  return (uri) => {
    let known = normalized.get(uri);
    if (known === undefined) {
      known = normalizeHtu(uri) ?? false;
      if (uri.length <= MAX_REMEMBERED_URI_CHARS) normalized.set(uri, known);
    }
    return known === false ? undefined : known;
  };
}

/**
 * The `htu` a request must carry: the route's `publicOrigin` (RFC 9449 §4.3 wants the URI the
 * client used, not the upstream's), else `https://<Host>`, followed by the request path.
 */
export function expectedHtu(publicOrigin: string | undefined, host: string, path: string): string {
  const origin = publicOrigin ?? `https://${host}`;
  const cut = path.search(/[?#]/);
  return `${origin}${cut === -1 ? path : path.slice(0, cut)}`;
}
