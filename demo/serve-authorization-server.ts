/**
 * The demo authorization server (demo/authorization-server.ts) as a long-running process: the
 * `authorization-server` of the docker-compose front door (deploy/docker-compose.yml), or by hand:
 *
 *   node demo/serve-authorization-server.ts --certs DIR [--host 0.0.0.0] [--port 9443]
 *                                           [--names authorization-server,localhost,127.0.0.1]
 *
 * Each option also comes from the environment: AS_CERTS_DIR, AS_HOST, AS_PORT, AS_TLS_NAMES.
 * DIR is what `cnfguard dev-certs DIR` writes: the AS reads the dev CA (ca.crt, ca.key) and issues
 * itself a fresh server certificate, in memory, for `--names` (DNS names and IP addresses), so that
 * one certificate is valid both for the compose service name (what cnfguard introspects at) and for
 * localhost (what a curl on the host asks for tokens at). Nothing is written to disk.
 *
 * One JSON line on stdout says where the endpoints are; the process then serves until SIGTERM or
 * SIGINT, closes every connection and exits 0. Bad options or an unreadable CA exit 2.
 *
 * Demo only: the clients and their secrets are the hard-coded AS_CLIENTS, and storage is in memory
 * (a restart forgets every token).
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AS_CLIENTS, startAuthorizationServer } from './authorization-server.ts';
import type { AuthorizationServer } from './authorization-server.ts';
import { issueServerCertificate } from '../src/tls/dev-certs.ts';
import type { PemPair } from '../src/tls/dev-certs.ts';

const DEFAULTS = { host: '0.0.0.0', port: '9443', names: 'authorization-server,localhost,127.0.0.1' };

class UsageError extends Error {}

interface ServeOptions {
  certsDir: string;
  host: string;
  port: number;
  names: { dns: string[]; ips: string[] };
}

function parseOptions(argv: string[], env: NodeJS.ProcessEnv): ServeOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      certs: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      names: { type: 'string' },
    },
  });
  const certsDir = values.certs ?? env.AS_CERTS_DIR;
  if (certsDir === undefined || certsDir === '') throw new UsageError('--certs DIR (or AS_CERTS_DIR) is required');
  const host = values.host ?? env.AS_HOST ?? DEFAULTS.host;
  const portText = values.port ?? env.AS_PORT ?? DEFAULTS.port;
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) throw new UsageError(`--port: not a port number: ${JSON.stringify(portText)}`);
  const list = (values.names ?? env.AS_TLS_NAMES ?? DEFAULTS.names)
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  if (list.length === 0) throw new UsageError('--names: at least one DNS name or IP address');
  return {
    certsDir,
    host,
    port,
    names: { dns: list.filter((name) => isIP(name) === 0), ips: list.filter((name) => isIP(name) !== 0) },
  };
}

function readCa(dir: string): PemPair {
  const read = (name: string): string => {
    const file = join(dir, name);
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)} (run "cnfguard dev-certs ${dir}" first)`);
    }
  };
  return { cert: read('ca.crt'), key: read('ca.key') };
}

function log(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), name: 'authorization-server', ...fields })}\n`);
}

async function main(): Promise<number> {
  let options: ServeOptions;
  let tls: PemPair;
  try {
    options = parseOptions(process.argv.slice(2), process.env);
    tls = issueServerCertificate(readCa(options.certsDir), options.names);
  } catch (err) {
    if (!(err instanceof UsageError) && !(err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) throw err;
    process.stderr.write(`serve-authorization-server: ${(err as Error).message}\n`);
    return 2;
  }

  let as: AuthorizationServer;
  try {
    as = await startAuthorizationServer({ tls, host: options.host, port: options.port });
  } catch (err) {
    process.stderr.write(`serve-authorization-server: cannot listen on ${options.host}:${options.port}: ${(err as Error).message}\n`);
    return 2;
  }
  const path = (url: string): string => new URL(url).pathname;
  log({
    msg: 'authorization server listening',
    listen: `${options.host}:${options.port}`,
    issuer: as.issuer,
    tokenPath: path(as.tokenUrl),
    introspectionPath: path(as.introspectionUrl),
    tlsNames: [...options.names.dns, ...options.names.ips],
    resource: as.resource,
    clients: Object.keys(AS_CLIENTS),
  });

  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      log({ msg: 'shutting down', signal });
      as.stop().then(
        () => resolve(0),
        (err: unknown) => {
          log({ msg: 'shutdown failed', err: String(err) });
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

// Explicit exit: oidc-provider may keep timers alive after the listener is closed.
process.exit(await main());
