/**
 * The cnfguard config file the benchmarks start `cnfguard` with: the defaults users run, in front
 * of `upstream`, introspecting at the demo AS with the dev PKI; `extra` replaces top-level keys.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { AuthorizationServer } from '../../demo/authorization-server.ts';
import type { Pki } from '../../test/fixtures/stack.ts';

export function writeGuardConfig(pki: Pki, as: AuthorizationServer, upstream: string, name: string, extra: Record<string, unknown> = {}): string {
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.files.server.cert, key: pki.files.server.key },
    // No start-up probe: the cache-miss phases count AS calls, exactly one per new token.
    introspection: { url: as.introspectionUrl, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 2000, probeAtStartup: false },
    upstream,
    admin: { host: '127.0.0.1', port: 0 },
    ...extra,
  };
  const file = join(pki.dir, `${name}.yaml`);
  writeFileSync(file, stringify(config));
  return file;
}
