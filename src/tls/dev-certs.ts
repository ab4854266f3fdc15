// Development and test certificates: a throwaway CA, a server certificate and client certificates.
//
// Keys come from Node's crypto (forge's pure-JS RSA keygen is slow); forge only builds and signs the
// X.509 structures. These certificates are for development and tests: private keys are written
// unencrypted, and nothing here is meant to protect production traffic.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import forge from 'node-forge';
import { writeFilesTogether, type FileToWrite } from '../write-files.ts';

/** A certificate and its private key, both PEM (the key is unencrypted PKCS#8). */
export interface PemPair {
  cert: string;
  key: string;
}

export interface DevCertificates {
  ca: PemPair;
  server: PemPair;
  clients: { client1: PemPair; client2: PemPair };
}

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;
/** Leaf lifetime: the longest that Apple platforms accept for TLS server certificates. */
const LEAF_VALIDITY_DAYS = 825;
const CA_VALIDITY_YEARS = 10;

// GeneralName tags (RFC 5280 §4.2.1.6) as node-forge numbers them.
const SAN_DNS = 2;
const SAN_URI = 6;
const SAN_IP = 7;

interface KeyMaterial {
  keyPem: string;
  privateKey: forge.pki.rsa.PrivateKey;
  publicKey: forge.pki.rsa.PublicKey;
}

function generateKey(): KeyMaterial {
  const { privateKey: keyPem } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const privateKey = forge.pki.privateKeyFromPem(keyPem);
  const publicKey = forge.pki.setRsaPublicKey(privateKey.n, privateKey.e);
  return { keyPem, privateKey, publicKey };
}

/**
 * 16 random bytes as hex, a positive DER INTEGER: high bit cleared (not negative) and a non-zero
 * first byte (a leading 0x00 before a byte < 0x80 is non-minimal DER, which OpenSSL 3 rejects).
 */
function randomSerialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) || 0x01;
  return bytes.toString('hex');
}

/** A certificate's validity period; tests pass one in the past (expired) or the future (not yet valid). */
export interface Validity {
  notBefore?: Date;
  notAfter?: Date;
}

function validity(cert: forge.pki.Certificate, notAfter: Date, period: Validity = {}): void {
  cert.validity.notBefore = period.notBefore ?? new Date(Date.now() - HOUR_MS);
  cert.validity.notAfter = period.notAfter ?? notAfter;
}

function leafNotAfter(): Date {
  return new Date(Date.now() + LEAF_VALIDITY_DAYS * DAY_MS);
}

function subjectKeyIdentifierBytes(cert: forge.pki.Certificate): string {
  const ext = cert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier?: string } | undefined;
  if (ext?.subjectKeyIdentifier) return forge.util.hexToBytes(ext.subjectKeyIdentifier);
  return cert.generateSubjectKeyIdentifier().getBytes();
}

function sign(cert: forge.pki.Certificate, key: forge.pki.rsa.PrivateKey): string {
  cert.sign(key, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

interface CaMaterial {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
}

function loadCa(ca: PemPair): CaMaterial {
  return {
    cert: forge.pki.certificateFromPem(ca.cert),
    key: forge.pki.privateKeyFromPem(ca.key),
  };
}

function newLeaf(
  issuer: CaMaterial | undefined,
  commonName: string,
  keys: KeyMaterial,
  period?: Validity,
): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerialNumber();
  validity(cert, leafNotAfter(), period);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(issuer ? issuer.cert.subject.attributes : subject);
  return cert;
}

type AltName = { type: number; value?: string; ip?: string };

function leafExtensions(
  eku: 'serverAuth' | 'clientAuth',
  altNames: AltName[],
  authorityKeyIdentifier: string | true,
  withKeyUsage = true,
): object[] {
  const extensions: object[] = [
    { name: 'basicConstraints', cA: false, critical: true },
    ...(withKeyUsage ? [{ name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true }] : []),
    { name: 'extKeyUsage', [eku]: true },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: authorityKeyIdentifier },
  ];
  if (altNames.length > 0) extensions.push({ name: 'subjectAltName', altNames });
  return extensions;
}

/** A self-signed CA certificate (basicConstraints cA, keyCertSign/cRLSign), valid for 10 years. */
export function createCertificateAuthority(commonName: string): PemPair {
  const keys = generateKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerialNumber();
  const notAfter = new Date();
  notAfter.setFullYear(notAfter.getFullYear() + CA_VALIDITY_YEARS);
  validity(cert, notAfter);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
    // Self-signed: the authority key is the certificate's own key.
    { name: 'authorityKeyIdentifier', keyIdentifier: true },
  ]);
  return { cert: sign(cert, keys.privateKey), key: keys.keyPem };
}

/**
 * A TLS server certificate signed by `ca` (serverAuth EKU), with the given DNS and IP SANs; valid
 * from an hour ago for 825 days unless `period` says otherwise.
 */
export function issueServerCertificate(ca: PemPair, names: { dns: string[]; ips: string[] }, period?: Validity): PemPair {
  const issuer = loadCa(ca);
  const keys = generateKey();
  const commonName = names.dns[0] ?? names.ips[0] ?? 'server';
  const cert = newLeaf(issuer, commonName, keys, period);
  const altNames: AltName[] = [
    ...names.dns.map((value) => ({ type: SAN_DNS, value })),
    ...names.ips.map((ip) => ({ type: SAN_IP, ip })),
  ];
  cert.setExtensions(leafExtensions('serverAuth', altNames, subjectKeyIdentifierBytes(issuer.cert)));
  return { cert: sign(cert, issuer.key), key: keys.keyPem };
}

/** A TLS client certificate signed by `ca` (clientAuth EKU), with optional URI and DNS SANs. */
export function issueClientCertificate(
  ca: PemPair,
  commonName: string,
  opts: { uri?: string; dns?: string[] } = {},
): PemPair {
  const issuer = loadCa(ca);
  const keys = generateKey();
  const cert = newLeaf(issuer, commonName, keys);
  const altNames: AltName[] = [
    ...(opts.uri === undefined ? [] : [{ type: SAN_URI, value: opts.uri }]),
    ...(opts.dns ?? []).map((value) => ({ type: SAN_DNS, value })),
  ];
  cert.setExtensions(leafExtensions('clientAuth', altNames, subjectKeyIdentifierBytes(issuer.cert)));
  return { cert: sign(cert, issuer.key), key: keys.keyPem };
}

/**
 * A self-signed client certificate with no CA (RFC 8705 §2.2 self-signed method): binding then
 * rests on the certificate's thumbprint alone. Not usable where `tls.clientCa` is enforced.
 */
export function createSelfSignedClientCertificate(commonName: string): PemPair {
  const keys = generateKey();
  const cert = newLeaf(undefined, commonName, keys);
  // No keyUsage extension: with one lacking keyCertSign, OpenSSL would not treat the certificate as
  // self-signed (X509_check_issued against itself fails), and keyCertSign on a non-CA is non-conforming.
  cert.setExtensions(leafExtensions('clientAuth', [], true, false));
  return { cert: sign(cert, keys.privateKey), key: keys.keyPem };
}

/**
 * A fresh dev CA ("cnfguard dev CA"), a server certificate for localhost / 127.0.0.1 / ::1, and two
 * client certificates (client1 also carries URI SAN spiffe://cnfguard.dev/client1 and DNS
 * client1.cnfguard.dev). Every call makes new keys.
 */
export function generateDevCertificates(): DevCertificates {
  const ca = createCertificateAuthority('cnfguard dev CA');
  return {
    ca,
    server: issueServerCertificate(ca, { dns: ['localhost'], ips: ['127.0.0.1', '::1'] }),
    clients: {
      client1: issueClientCertificate(ca, 'client1', {
        uri: 'spiffe://cnfguard.dev/client1',
        dns: ['client1.cnfguard.dev'],
      }),
      client2: issueClientCertificate(ca, 'client2'),
    },
  };
}

/**
 * The file stems `writeDevCertificates` uses: the server pair is `tls.crt` / `tls.key`, the names
 * cert-manager and `kubernetes.io/tls` Secrets use, so one config (`/tls/tls.crt`) fits the dev
 * files, the image and the Kubernetes manifests alike. (Before 0.2 it was `server.crt`/`server.key`.)
 */
export const DEV_CERT_STEMS = { ca: 'ca', server: 'tls', client1: 'client1', client2: 'client2' } as const;

/** Key file modes `--key-mode` accepts: owner-readable, never executable, never group/other-writable. */
export function parseKeyMode(text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) throw new RangeError(`key mode ${JSON.stringify(text)}: expected an octal mode such as 0600 or 0644`);
  const mode = Number.parseInt(text, 8);
  if ((mode & 0o400) === 0) throw new RangeError(`key mode ${text}: the owner must be able to read the key`);
  if ((mode & 0o133) !== 0) throw new RangeError(`key mode ${text}: no execute bits and no write for group or others`);
  return mode;
}

export interface WriteOptions {
  /**
   * Mode of the private key files (default 0600). 0644 lets a container running as another uid
   * (the image's 10001) read a bind-mounted directory: dev keys only, readable by every local user.
   */
  keyMode?: number;
  /** Other files written with the certificates, all or none (init's config). */
  alongside?: readonly FileToWrite[];
}

/**
 * Generates dev certificates and writes them into `dir` (created if missing): `ca`, the server pair
 * `tls`, `client1` and `client2`, as `<stem>.crt` / `<stem>.key`. Keys get `keyMode` (default 0600),
 * exactly and also when a file is overwritten (each file is a new one, renamed into place). Every
 * file is written or none is: throws {@link FileWriteError} (src/write-files.ts), naming the path
 * and the cause, before replacing anything. Returns file name -> absolute path.
 */
export async function writeDevCertificates(dir: string, options: WriteOptions = {}): Promise<Record<string, string>> {
  const keyMode = options.keyMode ?? 0o600;
  const root = resolve(dir);
  const certs = generateDevCertificates();
  const pairs: [string, PemPair][] = [
    [DEV_CERT_STEMS.ca, certs.ca],
    [DEV_CERT_STEMS.server, certs.server],
    [DEV_CERT_STEMS.client1, certs.clients.client1],
    [DEV_CERT_STEMS.client2, certs.clients.client2],
  ];
  const written: Record<string, string> = {};
  const files: FileToWrite[] = [];
  for (const [name, pair] of pairs) {
    const certPath = resolve(root, `${name}.crt`);
    const keyPath = resolve(root, `${name}.key`);
    files.push({ path: certPath, content: pair.cert, mode: 0o644 });
    // A new file, never secret bytes written into an old one whose permissions may be wider.
    files.push({ path: keyPath, content: pair.key, mode: keyMode, exactMode: true });
    written[`${name}.crt`] = certPath;
    written[`${name}.key`] = keyPath;
  }
  await writeFilesTogether([...(options.alongside ?? []), ...files]);
  return written;
}
