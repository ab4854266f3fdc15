/**
 * The schemas of what sits in front of cnfguard: the trusted TLS terminators (`trustedProxies`)
 * and the decision API they ask (`decisionApi`); built for each config schema (schema.ts).
 */
import { createSecureContext } from 'node:tls';
import * as z from 'zod';
import { FORWARDED_CERTIFICATE_FORMATS } from '../tls/forwarded-certificate.ts';
import { parseCidrList } from '../tls/peers.ts';
import type { FieldSchemas } from './schema-fields.ts';

/** Longest path a Unix socket address holds on Linux (sun_path is 108 bytes with its NUL). */
const UNIX_SOCKET_PATH_BYTES = 107;

/** The TLS cipher list, `trustedProxies` entries and `decisionApi`, from the config schema's field schemas. */
export function frontSchemas({ headerName, port }: Pick<FieldSchemas, 'headerName' | 'port'>) {
  /** A CIDR (or bare address), checked by parsing it the way the listener will. */
  const cidr = z.string().superRefine((value, ctx) => {
    try {
      parseCidrList([value]);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'an IPv4 or IPv6 address or CIDR, e.g. 10.0.0.0/8 or fd00::/8' });
    }
  });

  /** An OpenSSL cipher list, checked by building a TLS context with it (as the listener will). */
  const cipherList = z.string().superRefine((value, ctx) => {
    if (value === '') return;
    try {
      createSecureContext({ ciphers: value });
    } catch {
      ctx.addIssue({ code: 'custom', message: `no cipher OpenSSL knows in ${JSON.stringify(value)}: an OpenSSL cipher list such as ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256` });
    }
  });

  /**
   * A TLS terminator in front of cnfguard whose certificate header is believed: only from these
   * peers, only in this header. From every other peer the header is deleted before anything reads it.
   */
  const trustedProxySchema = z.strictObject({
    cidrs: z.array(cidr).min(1).optional().describe("The proxy's addresses (CIDRs); the header is believed only from these peers. Or unixSocket instead."),
    unixSocket: z
      .literal(true)
      .optional()
      .describe("Instead of cidrs: the peers of the decision API's Unix socket (decisionApi.socket), that is whoever the socket file's permissions let connect."),
    header: headerName.describe('The request header in which the proxy passes the client certificate.'),
    format: z.enum(FORWARDED_CERTIFICATE_FORMATS as [string, ...string[]]).transform((f) => f as (typeof FORWARDED_CERTIFICATE_FORMATS)[number]).describe("How the header encodes the certificate: pem-urlencoded (nginx), xfcc (Envoy), base64-der (Traefik)."),
    xfccElement: z.enum(['last', 'first']).default('last').describe("XFCC only: which element is the trusted proxy's; `last` unless the proxy sanitizes what clients send."),
  }).superRefine((entry, ctx) => {
    if ((entry.cidrs === undefined) === (entry.unixSocket === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['cidrs'], message: 'set either cidrs (peers by address) or unixSocket: true (peers of decisionApi.socket), not both or neither' });
    }
  });

  const unixSocketPath = z
    .string()
    .startsWith('/', 'an absolute path, e.g. /run/cnfguard/decision.sock')
    .refine((path) => Buffer.byteLength(path) <= UNIX_SOCKET_PATH_BYTES, `at most ${UNIX_SOCKET_PATH_BYTES} bytes (the kernel's limit for a Unix socket path)`);

  const decisionApiSchema = z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1').describe('Address of the decision API (plain HTTP) when port is set.'),
      port: port.optional().describe('TCP port of the decision API.'),
      socket: unixSocketPath
        .optional()
        .describe("Unix socket path of the decision API, instead of or beside port: for a front sharing cnfguard's filesystem (a pod's emptyDir). Its peers are believed through a trustedProxies entry with unixSocket: true. A stale socket file left by a crash is replaced; any other file there is an error."),
      socketMode: z
        .string()
        .regex(/^0?[0-7]{3}$/, 'octal permissions, e.g. "0660"')
        .default('0660')
        .describe("Permissions of the socket file (octal): who may connect. Default 0660, owner and group (a pod's fsGroup)."),
    })
    .refine((api) => api.port !== undefined || api.socket !== undefined, { message: 'set port, socket or both', path: ['port'] });

  return { cipherList, trustedProxySchema, decisionApiSchema };
}
