/**
 * The origins a DPoP proof's `htu` may name (issue 26, finding 8). Without `publicOrigin` the
 * expected `htu` is `https://<Host>` + path, and the Host is the client's to choose: a proof made
 * for another resource server (`https://other.example/x`) would pass when the request names that
 * host. So the origin must be one cnfguard can be reached at:
 * - a configured `publicOrigin` (top level or any route's), or
 * - `https://<name>[:port]` where the name is one the server certificate is valid for (DNS or IP
 *   subject alternative names, wildcards as TLS clients match them: node's checkHost/checkIP)
 *   or matches a route's `host`, and the port is the proxy listener's own or absent (443: a
 *   load balancer or Kubernetes Service in front maps it).
 * Anything else is `dpop_htu_mismatch`. Behind a front that terminates TLS with its own name
 * (the decision API, an ingress), set `publicOrigin`: `cnfguard check` warns without it.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import { hostMatches } from '../routing/match.ts';
import { splitPemCertificates } from '../tls/certificates.ts';

export interface ServedOrigins {
  /** The server certificate chain in force (PEM), following reloads. */
  certificate: () => string | undefined;
  /** The proxy listener's port once it listens. */
  port: () => number | undefined;
}

export interface OriginCheckOptions extends ServedOrigins {
  /** Route `host` patterns: exact, or `*.suffix`. */
  routeHosts: readonly (string | undefined)[];
  /** Configured `publicOrigin`s (URL origins), accepted as they are. */
  publicOrigins: readonly (string | undefined)[];
}

/** Whether a normalised origin (`https://host[:port]`, as normalizeHtu writes it) is one cnfguard is reached at. */
export type OriginCheck = (origin: string) => boolean;

export function createOriginCheck(options: OriginCheckOptions): OriginCheck {
  const configured = new Set(options.publicOrigins.filter((origin) => origin !== undefined));
  const routeHosts = options.routeHosts.filter((host) => host !== undefined);
  // Clients send a handful of Hosts; anyone else's guesses only cycle through the cache.
  const answers = new LRUCache<string, boolean>({ max: 256 });
  let pem: string | undefined;
  let leaf: X509Certificate | undefined;

  function named(name: string): boolean {
    if (routeHosts.some((pattern) => hostMatches(pattern, name))) return true;
    if (leaf === undefined) return false;
    const ip = name.startsWith('[') ? name.slice(1, -1) : name;
    return isIP(ip) !== 0 ? leaf.checkIP(ip) !== undefined : leaf.checkHost(name) !== undefined;
  }

  function reachable(origin: string, port: number): boolean {
    if (configured.has(origin)) return true;
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      return false;
    }
    if (url.protocol !== 'https:' || (url.port !== '' && url.port !== String(port))) return false;
    const name = url.hostname.endsWith('.') ? url.hostname.slice(0, -1) : url.hostname;
    return named(name);
  }

  return (origin) => {
    if (configured.has(origin)) return true;
    const current = options.certificate();
    if (current !== pem) {
      pem = current;
      const first = current === undefined ? undefined : splitPemCertificates(current)[0];
      leaf = first === undefined ? undefined : new X509Certificate(first);
      answers.clear();
    }
    const port = options.port();
    if (port === undefined) return false;
    let answer = answers.get(origin);
    if (answer === undefined) {
      answer = reachable(origin, port);
      answers.set(origin, answer);
    }
    return answer;
  };
}

/** The origin part of a normalised http(s) URI (`https://host[:port]/path` -> `https://host[:port]`). */
export function originOf(uri: string): string {
  const slash = uri.indexOf('/', uri.indexOf('//') + 2);
  return slash === -1 ? uri : uri.slice(0, slash);
}
