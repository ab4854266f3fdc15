import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError, type Command } from './command.ts';
import { devCertificateFiles, keyModeOf, refuseUnwritten, unwritable } from './dev-certs.ts';
import { refuseExisting } from './existing.ts';

/**
 * The starter config `init` writes: `check` accepts it as written next to the certificates `init`
 * writes into certs/, and it runs against the demo AS (`npm run demo:as -- --certs DIR/certs`).
 * test/unit/config-docs.test.ts checks it against the JSON Schema, test/e2e/init.test.ts runs it.
 */
export const INIT_CONFIG = `# cnfguard.yaml, written by \`cnfguard init\`. \`cnfguard check -c cnfguard.yaml\` accepts it as
# written. For your own service change the lines marked CHANGE, then run check again.
# Every key, its default and meaning: docs/configuration.md (or \`cnfguard schema\` for editors).
# Relative paths are read from this file's folder. \${VAR:-default} reads the environment.

listen:
  host: 0.0.0.0                # clients connect here (TLS)
  port: 8443

tls:
  # The listener's certificate: the dev pair init wrote, for localhost and 127.0.0.1.
  # CHANGE for anything but a laptop: your server certificate and key (reloaded when they change).
  cert: certs/tls.crt
  key: certs/tls.key
  # Client certificates must chain to this CA: the dev CA that issued certs/client1.crt and
  # certs/client2.crt. Remove the line to accept any client certificate (RFC 8705 self-signed
  # method: the binding then rests on the token's x5t#S256 alone).
  clientCa: certs/ca.crt
  minVersion: TLSv1.2          # or TLSv1.3

introspection:
  # CHANGE: your authorization server's introspection endpoint (RFC 7662). The placeholder is the
  # demo AS (npm run demo:as -- --certs <this folder>/certs), whose certificate the dev CA issued.
  url: https://127.0.0.1:9443/token/introspection
  clientId: rs                 # CHANGE: the client cnfguard authenticates as at the AS
  # The demo AS's secret for rs unless INTROSPECTION_SECRET is set. CHANGE: set the variable, or
  # use clientSecretFile: /path/to/secret for a mounted secret.
  clientSecret: \${INTROSPECTION_SECRET:-rs-secret}
  ca: certs/ca.crt             # trust for the AS's certificate; remove for a publicly trusted AS

# CHANGE: the service cnfguard protects. Only cnfguard should be able to reach it.
upstream: http://127.0.0.1:8080

# Tokens must be bound to the client's certificate (cnf.x5t#S256, RFC 8705). To see first what
# would be refused, use report-only: mismatches are logged and forwarded.
binding: required
methods: [mtls]                # add dpop to accept DPoP-bound tokens (RFC 9449) too

# Health, readiness and metrics (plain HTTP): keep it on loopback or a private network.
admin:
  host: 127.0.0.1
  port: 9090
logLevel: info
`;

export const init: Command = {
  summary: 'write dev certificates and a commented cnfguard.yaml that check accepts, to start from',
  usage: `usage: cnfguard init DIR [--force] [--key-mode MODE]

Writes DIR/cnfguard.yaml, a commented starter config, and dev certificates into DIR/certs (as
dev-certs does: a CA, a localhost server pair, two client pairs). \`cnfguard check -c
DIR/cnfguard.yaml\` accepts it as written; its introspection URL is the demo AS's
(npm run demo:as -- --certs DIR/certs) as a placeholder. Refuses (exit 2, naming them) when any of
these files exists, unless --force.

  --force             replace existing files
  --key-mode MODE     the private keys' file mode (default 0600)
  -h, --help          this text
`,
  async run(args) {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { force: { type: 'boolean' }, 'key-mode': { type: 'string' } } });
    if (positionals.length !== 1 || positionals[0] === undefined) throw new UsageError('expected a directory', 'init');
    const dir = resolve(positionals[0]);
    const keyMode = await keyModeOf(values['key-mode'], 'init');
    const { DEV_CERT_STEMS, writeDevCertificates } = await import('../tls/dev-certs.ts');
    const configFile = join(dir, 'cnfguard.yaml');
    const files = [configFile, ...devCertificateFiles(join(dir, 'certs'), DEV_CERT_STEMS)];
    const refused = (await unwritable('init', files)) ?? refuseExisting('init', files, values.force === true);
    if (refused !== undefined) {
      process.stderr.write(`cnfguard: ${refused}\n`);
      return 2;
    }
    let written: Record<string, string>;
    try {
      // The config and the certificates together: all of them or none.
      written = await writeDevCertificates(join(dir, 'certs'), { keyMode, alongside: [{ path: configFile, content: INIT_CONFIG, mode: 0o644 }] });
    } catch (err) {
      return refuseUnwritten('init', err);
    }
    for (const path of [configFile, ...Object.values(written)]) process.stdout.write(`wrote ${path}\n`);
    const shown = relative(process.cwd(), configFile);
    process.stdout.write(`\nnext: cnfguard check -c ${shown.startsWith('..') || shown === '' ? configFile : shown}   (in a checkout: ./bin/cnfguard.js check …)\n`);
    return 0;
  },
};
