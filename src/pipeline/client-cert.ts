/**
 * Step: the client certificate a request is judged on, as facts computed once.
 *
 * Two sources, never mixed:
 * - the TLS connection itself: cnfguard asks for a certificate in every handshake but never
 *   requires one there (`rejectUnauthorized: false`), so a missing or untrusted certificate gets a
 *   proper OAuth error instead of a failed handshake;
 * - a trusted TLS terminator's header (`trustedProxies`), believed only when the TCP peer is in
 *   that proxy's CIDRs. The connection's own certificate is then the proxy's and is ignored.
 * Every configured certificate header is deleted from every request once read, so a client can
 * never supply one, and the upstream never sees one.
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { lazyLru } from '../lru.ts';
import type { LRUCache } from 'lru-cache';
import { GuardError } from '../oauth/reasons.ts';
import { sha256, splitPemCertificates, subjectAltNames, subjectRfc4514 } from '../tls/certificates.ts';
import { ForwardedCertificateError, parseForwardedCertificate, type ForwardedCertificateFormat } from '../tls/forwarded-certificate.ts';
import { parseCidrList, peerInList, UNIX_SOCKET_PEER } from '../tls/peers.ts';
import { xfccElement } from '../tls/xfcc.ts';

export interface ClientCertificate {
  /** RFC 8705 `x5t#S256` of the leaf DER. */
  readonly thumbprint: string;
  /** Hex SHA-256 of the leaf DER (Envoy XFCC `Hash`). */
  readonly sha256Hex: string;
  /** Empty when only a thumbprint was forwarded. */
  readonly subject: string;
  readonly uris: readonly string[];
  readonly dns: readonly string[];
  /**
   * False only when `tls.clientCa` is configured and the certificate does not chain to it.
   * Without `tls.clientCa` any certificate is accepted (RFC 8705 §2.2 self-signed method). A
   * forwarded thumbprint alone cannot be checked and counts as trusted: the proxy verified it.
   */
  readonly trusted: boolean;
  /** The Envoy XFCC element for the upstream, built once per certificate. */
  readonly xfcc: string;
}

export interface TrustedProxy {
  /** The proxy's TCP addresses; or `unixSocket`. */
  cidrs?: readonly string[] | undefined;
  /** The peers of the decision API's Unix socket (their address is UNIX_SOCKET_PEER). */
  unixSocket?: true | undefined;
  header: string;
  format: ForwardedCertificateFormat;
  xfccElement: 'last' | 'first';
}

export interface CertificateSourceOptions {
  trustedProxies: readonly TrustedProxy[];
  /** PEM bundle of tls.clientCa, when configured. */
  clientCa: string | undefined;
  now?: () => number;
}

export interface RequestConnection {
  socket: TLSSocket | undefined;
  peerAddress: string | undefined;
  /** Every line of one header (lower-case name), as received; read only for a trusted proxy's certificate header. */
  headerLines(name: string): string[] | undefined;
}

export interface CertificateSource {
  /**
   * The certificate to judge the request on, or undefined when there is none. Throws
   * `forwarded_certificate_malformed`. (Every configured certificate header is among the headers
   * never forwarded: upstream-headers.ts.)
   */
  certificateOf(connection: RequestConnection): ClientCertificate | undefined;
  /** Whether the TCP peer is one of the `trustedProxies`. */
  isTrustedProxy(peerAddress: string | undefined): boolean;
  /** The certificate header the `trustedProxies` entry of this peer sends, if it is one. */
  certificateHeaderOf(peerAddress: string | undefined): string | undefined;
  /** A reloaded tls.clientCa: forwarded certificates are checked against it from now on. */
  updateClientCa(pem: string | undefined): void;
  /** A reloaded config's trusted proxies: a removed peer or header is not believed from the next request on. */
  updateTrustedProxies(trustedProxies: readonly TrustedProxy[]): void;
}

function withXfcc(facts: Omit<ClientCertificate, 'xfcc'>): ClientCertificate {
  return Object.freeze({ ...facts, xfcc: xfccElement(facts) });
}

function factsOf(x509: X509Certificate, trusted: boolean): ClientCertificate {
  const { uri, dns } = subjectAltNames(x509);
  const digest = sha256(x509.raw);
  return withXfcc({ thumbprint: digest.toString('base64url'), sha256Hex: digest.toString('hex'), subject: subjectRfc4514(x509), uris: uri, dns, trusted });
}

/**
 * Whether a certificate that arrived in a header chains to one of the CA certificates and is
 * within its validity period. Only one step: the bundle must hold the issuing CA (intermediates
 * included), since forwarded headers usually carry the leaf alone.
 */
export function chainsTo(x509: X509Certificate, authorities: readonly X509Certificate[], nowMs: number): boolean {
  if (nowMs < Date.parse(x509.validFrom) || nowMs > Date.parse(x509.validTo)) return false;
  return authorities.some((ca) => ca.ca && x509.checkIssued(ca) && x509.verify(ca.publicKey));
}

/** A parsed certificate header value, with the value it was parsed from. */
interface ParsedHeader {
  text: string;
  facts: ClientCertificate;
  der: X509Certificate | undefined;
}

/**
 * How many characters of a header value key the parsed-header cache: its end, where a forwarded
 * certificate's signature is. Hashing the whole value (a 2 KiB PEM) on every request was 3% of a
 * decision's CPU; comparing it with the cached one is a memcmp. Values sharing an end only take
 * turns in the cache.
 */
const KEY_TAIL = 64;

export function createCertificateSource(options: CertificateSourceOptions): CertificateSource {
  const now = options.now ?? Date.now;
  const verifyChain = options.clientCa !== undefined;
  let authorities = splitPemCertificates(options.clientCa ?? '').map((pem) => new X509Certificate(pem));
  // Proxies resend the same certificate on every request: parse each header value once. One
  // cache per format and XFCC element (a config names a format or two), keyed by the value's end
  // (see KEY_TAIL) and confirmed against the whole value.
  const byHeader = new Map<string, LRUCache<string, ParsedHeader>>();
  const cacheOf = (proxy: TrustedProxy): LRUCache<string, ParsedHeader> => {
    const kind = `${proxy.format}\0${proxy.xfccElement}`;
    let cache = byHeader.get(kind);
    if (cache === undefined) byHeader.set(kind, (cache = lazyLru<string, ParsedHeader>(10_000)));
    return cache;
  };
  const compile = (trustedProxies: readonly TrustedProxy[]) =>
    trustedProxies.map((proxy) => {
      const list = proxy.cidrs === undefined ? undefined : parseCidrList([...proxy.cidrs]);
      const matches = list === undefined ? (address: string | undefined) => proxy.unixSocket === true && address === UNIX_SOCKET_PEER : (address: string | undefined) => peerInList(list, address);
      return { ...proxy, matches, cache: cacheOf(proxy) };
    });
  let proxies = compile(options.trustedProxies);
  // The peer's entry, remembered for the last address: a front proxy asks again and again from one
  // address, and the decision API asks three times a request (BlockList checks cost ~1 µs each).
  let lastPeer: { address: string | undefined; proxy: (typeof proxies)[number] | undefined } | undefined;
  const proxyOf = (address: string | undefined): (typeof proxies)[number] | undefined => {
    if (proxies.length === 0) return undefined;
    if (lastPeer === undefined || lastPeer.address !== address) lastPeer = { address, proxy: proxies.find((candidate) => candidate.matches(address)) };
    return lastPeer.proxy;
  };
  const bySocket = new WeakMap<TLSSocket, ClientCertificate | null>();

  function fromSocket(socket: TLSSocket): ClientCertificate | undefined {
    const known = bySocket.get(socket);
    if (known !== undefined) return known ?? undefined;
    const x509 = socket.getPeerX509Certificate();
    // OpenSSL verified the chain against tls.clientCa during the handshake and keeps the result
    // in the session, so a resumed session keeps both the certificate and the verdict.
    const facts = x509 === undefined ? null : factsOf(x509, !verifyChain || socket.authorized);
    bySocket.set(socket, facts);
    return facts ?? undefined;
  }

  function fromHeader(proxy: (typeof proxies)[number], value: string[] | undefined): ClientCertificate | undefined {
    if (value === undefined || value.length === 0) return undefined;
    const text = value.length === 1 ? value[0]! : value.join('\n');
    const key = text.length > KEY_TAIL ? text.slice(-KEY_TAIL) : text;
    let parsed = proxy.cache.get(key);
    if (parsed?.text !== text) {
      let forwarded;
      try {
        forwarded = parseForwardedCertificate(proxy.format, value, { xfccElement: proxy.xfccElement });
      } catch (err) {
        if (err instanceof ForwardedCertificateError) throw new GuardError('forwarded_certificate_malformed', { detail: `${proxy.header}: ${err.reason}` });
        throw err;
      }
      if (forwarded === undefined) return undefined;
      const x509 = forwarded.der === undefined ? undefined : new X509Certificate(forwarded.der);
      const facts =
        x509 === undefined
          ? withXfcc({ thumbprint: forwarded.thumbprint, sha256Hex: forwarded.sha256Hex, subject: '', uris: [], dns: [], trusted: true })
          : factsOf(x509, true);
      parsed = { text, facts, der: x509 };
      proxy.cache.set(key, parsed);
    }
    // Validity depends on the clock, so the chain verdict is not cached with the facts.
    if (verifyChain && parsed.der !== undefined && !chainsTo(parsed.der, authorities, now())) return { ...parsed.facts, trusted: false };
    return parsed.facts;
  }

  return {
    certificateOf(connection) {
      const proxy = proxyOf(connection.peerAddress);
      if (proxy !== undefined) return fromHeader(proxy, connection.headerLines(proxy.header));
      return connection.socket === undefined ? undefined : fromSocket(connection.socket);
    },
    isTrustedProxy(peerAddress) {
      return proxyOf(peerAddress) !== undefined;
    },
    certificateHeaderOf(peerAddress) {
      return proxyOf(peerAddress)?.header;
    },
    updateClientCa(pem) {
      if (verifyChain && pem !== undefined) authorities = splitPemCertificates(pem).map((block) => new X509Certificate(block));
    },
    updateTrustedProxies(trustedProxies) {
      // Parsed header values stay valid: they depend on the format, which is part of their key.
      proxies = compile(trustedProxies);
      lastPeer = undefined;
    },
  };
}
