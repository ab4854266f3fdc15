import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createCertificateAuthority,
  createSelfSignedClientCertificate,
  generateDevCertificates,
  issueClientCertificate,
  parseKeyMode,
  writeDevCertificates,
} from '../../src/tls/dev-certs.ts';
import type { DevCertificates, PemPair } from '../../src/tls/dev-certs.ts';

// OIDs of the extended key usages, as X509Certificate#keyUsage lists them.
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

function x509(pair: PemPair): X509Certificate {
  return new X509Certificate(pair.cert);
}

function expectIssuedBy(leaf: X509Certificate, ca: X509Certificate): void {
  expect(leaf.verify(ca.publicKey)).toBe(true);
  expect(leaf.checkIssued(ca)).toBe(true);
  expect(leaf.issuer).toBe(ca.subject);
}

function expectKeyMatches(pair: PemPair): void {
  expect(x509(pair).checkPrivateKey(createPrivateKey(pair.key))).toBe(true);
}

function expectSerialPositive16Bytes(cert: X509Certificate): void {
  // X509Certificate prints the serial as upper-case hex without a sign byte.
  expect(cert.serialNumber).toMatch(/^[0-9A-F]{32}$/);
  expect(Number.parseInt(cert.serialNumber.slice(0, 2), 16)).toBeLessThan(0x80);
}

function expectValidity(cert: X509Certificate, days: number): void {
  const now = Date.now();
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  expect(from).toBeLessThan(now - 59 * 60 * 1000);
  expect(from).toBeGreaterThan(now - 61 * 60 * 1000);
  expect(Math.round((to - now) / 86_400_000)).toBe(days);
}

describe('dev certificates', () => {
  let certs: DevCertificates;
  let ca: X509Certificate;

  beforeAll(() => {
    certs = generateDevCertificates();
    ca = x509(certs.ca);
  });

  it('makes a self-signed CA allowed to sign certificates', () => {
    expect(ca.ca).toBe(true);
    expect(ca.subject).toBe('CN=cnfguard dev CA');
    expectIssuedBy(ca, ca);
    expectKeyMatches(certs.ca);
    expectSerialPositive16Bytes(ca);
    const years = (Date.parse(ca.validTo) - Date.now()) / (365.25 * 86_400_000);
    expect(years).toBeGreaterThan(9.9);
    expect(years).toBeLessThan(10.1);
    expect(ca.toLegacyObject().ext_key_usage).toBeUndefined();
  });

  it('issues a server certificate for localhost, 127.0.0.1 and ::1 with serverAuth', () => {
    const server = x509(certs.server);
    expectIssuedBy(server, ca);
    expectKeyMatches(certs.server);
    expect(server.ca).toBe(false);
    expect(server.keyUsage).toEqual([SERVER_AUTH]);
    expect(server.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(server.checkHost('localhost')).toBe('localhost');
    expect(server.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(server.checkIP('::1')).toBe('::1');
    expectSerialPositive16Bytes(server);
    expectValidity(server, 825);
  });

  it('issues client certificates with clientAuth and the optional SANs', () => {
    const client1 = x509(certs.clients.client1);
    const client2 = x509(certs.clients.client2);
    for (const [pair, cert] of [[certs.clients.client1, client1], [certs.clients.client2, client2]] as const) {
      expectIssuedBy(cert, ca);
      expectKeyMatches(pair);
      expect(cert.ca).toBe(false);
      expect(cert.keyUsage).toEqual([CLIENT_AUTH]);
      expectSerialPositive16Bytes(cert);
      expectValidity(cert, 825);
    }
    expect(client1.subject).toBe('CN=client1');
    expect(client1.subjectAltName).toBe('URI:spiffe://cnfguard.dev/client1, DNS:client1.cnfguard.dev');
    expect(client2.subject).toBe('CN=client2');
    expect(client2.subjectAltName).toBeUndefined();
    // Distinct keys, distinct serials.
    expect(client1.publicKey.equals(client2.publicKey)).toBe(false);
    expect(client1.serialNumber).not.toBe(client2.serialNumber);
  });

  it('issues from a caller-supplied CA and makes self-signed client certificates', () => {
    const otherCa = createCertificateAuthority('other CA');
    const issued = issueClientCertificate(otherCa, 'svc', { uri: 'spiffe://example/svc' });
    expectIssuedBy(x509(issued), x509(otherCa));
    expect(x509(issued).verify(ca.publicKey)).toBe(false);
    expect(x509(issued).subjectAltName).toBe('URI:spiffe://example/svc');

    const selfSigned = createSelfSignedClientCertificate('self');
    const cert = x509(selfSigned);
    expectIssuedBy(cert, cert);
    expectKeyMatches(selfSigned);
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual([CLIENT_AUTH]);
    expect(cert.checkIssued(ca)).toBe(false);
  });
});

describe('writeDevCertificates', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cnfguard-dev-certs-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the eight PEM files, keys with mode 0600, into a new directory; the server pair is tls.crt/tls.key', async () => {
    const target = join(dir, 'nested', 'certs');
    const paths = await writeDevCertificates(target);
    const names = ['ca', 'tls', 'client1', 'client2'];
    expect(Object.keys(paths).sort()).toEqual(names.flatMap((n) => [`${n}.crt`, `${n}.key`]).sort());

    for (const name of names) {
      const certPath = paths[`${name}.crt`]!;
      const keyPath = paths[`${name}.key`]!;
      expect(isAbsolute(certPath)).toBe(true);
      expect(certPath).toBe(join(target, `${name}.crt`));
      expect(keyPath).toBe(join(target, `${name}.key`));
      expect((await stat(keyPath)).mode & 0o777).toBe(0o600);
      const pair = { cert: await readFile(certPath, 'utf8'), key: await readFile(keyPath, 'utf8') };
      expect(pair.cert).toMatch(/^-----BEGIN CERTIFICATE-----/);
      expect(pair.key).toMatch(/^-----BEGIN PRIVATE KEY-----/);
      expectKeyMatches(pair);
    }

    const writtenCa = new X509Certificate(await readFile(paths['ca.crt']!));
    expect(new X509Certificate(await readFile(paths['tls.crt']!)).checkHost('localhost')).toBe('localhost');
    for (const name of ['tls', 'client1', 'client2']) {
      expectIssuedBy(new X509Certificate(await readFile(paths[`${name}.crt`]!)), writtenCa);
    }
  });

  it('overwrites an existing set and keeps keys at 0600', async () => {
    const first = await writeDevCertificates(dir);
    const before = await readFile(first['ca.key']!, 'utf8');
    const second = await writeDevCertificates(dir);
    expect(await readFile(second['ca.key']!, 'utf8')).not.toBe(before);
    expect((await stat(second['client1.key']!)).mode & 0o777).toBe(0o600);
  });

  it('writes keys with the requested mode (0644: readable by the image uid 10001 through a bind mount), also over 0600 files', async () => {
    const target = join(dir, 'readable');
    await writeDevCertificates(target);
    const paths = await writeDevCertificates(target, { keyMode: 0o644 });
    for (const name of ['ca', 'tls', 'client1', 'client2']) expect((await stat(paths[`${name}.key`]!)).mode & 0o777).toBe(0o644);
  });
});

describe('parseKeyMode', () => {
  it('takes owner-readable, non-executable modes that others cannot write', () => {
    expect(parseKeyMode('0600')).toBe(0o600);
    expect(parseKeyMode('644')).toBe(0o644);
    expect(parseKeyMode('0440')).toBe(0o440);
  });
  it.each(['0666', '0700', '0200', '0604x', 'rw-r--r--', '0o644', ''])('refuses %j', (text) => {
    expect(() => parseKeyMode(text)).toThrow(RangeError);
  });
});
