import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { RELOAD_TABLE, reconcileReload, type ReloadRule } from '../../src/config/reload-table.ts';
import { configSchema, type Settings } from '../../src/config/schema.ts';
import { MINIMAL_CONFIG } from '../fixtures/config.ts';

/** The object schema under wrappers (default, prefault, optional, preprocess), or undefined for a leaf. */
function objectOf(schema: z.ZodType): z.ZodObject | undefined {
  let current: z.ZodType = schema;
  for (;;) {
    if (current instanceof z.ZodObject) return current;
    const def = current._zod.def as { type: string; innerType?: z.ZodType; in?: z.ZodType; out?: z.ZodType };
    if (def.innerType !== undefined) current = def.innerType;
    else if (def.type === 'pipe' && def.in !== undefined && def.out !== undefined) current = def.in._zod.def.type === 'transform' ? def.out : def.in;
    else return undefined;
  }
}

/** Every schema key the table leaves out, and every table key the schema does not have, as dotted paths. */
function mismatches(shape: Record<string, z.ZodType>, table: Readonly<Record<string, ReloadRule>>, prefix = ''): string[] {
  const found: string[] = [];
  for (const [key, schema] of Object.entries(shape)) {
    const rule = table[key];
    if (rule === undefined) {
      found.push(`missing from the table: ${prefix}${key}`);
      continue;
    }
    if (typeof rule !== 'object' || 'restartIf' in rule) continue; // one rule for the whole value
    const object = objectOf(schema);
    if (object === undefined) found.push(`the table splits ${prefix}${key}, which is no object`);
    else found.push(...mismatches(object.shape, rule as Record<string, ReloadRule>, `${prefix}${key}.`));
  }
  for (const key of Object.keys(table)) if (!(key in shape)) found.push(`not in the schema: ${prefix}${key}`);
  return found;
}

describe('the reload table', () => {
  it('names every key of the config schema, nested objects it splits included, and nothing else', () => {
    expect(mismatches(configSchema.shape, RELOAD_TABLE)).toEqual([]);
  });

  it('the walk sees nested keys (a table without one is caught)', () => {
    const { issuer: _issuer, ...withoutIssuer } = RELOAD_TABLE.introspection;
    expect(mismatches(configSchema.shape, { ...RELOAD_TABLE, introspection: withoutIssuer })).toEqual(['missing from the table: introspection.issuer']);
    const { logLevel: _logLevel, ...withoutLogLevel } = RELOAD_TABLE;
    expect(mismatches(configSchema.shape, withoutLogLevel)).toEqual(['missing from the table: logLevel']);
  });
});

const base = MINIMAL_CONFIG;
const settings = (extra: Record<string, unknown> = {}): Settings =>
  configSchema.parse({ ...base, ...extra, introspection: { ...base.introspection, ...((extra.introspection as object | undefined) ?? {}) } });

describe('reconcileReload', () => {
  it('live keys take the new value; restart keys keep the started one and are reported by path', () => {
    const started = settings({ trustedProxies: [{ cidrs: ['10.0.0.0/8'], header: 'x-client-cert', format: 'pem-urlencoded' }] });
    const next = settings({
      listen: { port: 9443 },
      binding: 'optional',
      trustedProxies: [],
      shutdownGraceSeconds: 3,
      introspection: { url: 'https://other-as.example/introspect', issuer: 'https://as.example' },
      limits: { headerBytes: 32768, urlBytes: 1024, maxConnections: 5 },
    });
    const { effective, restartRequired } = reconcileReload(started, next);
    expect(restartRequired.sort()).toEqual(['introspection.url', 'limits.headerBytes', 'listen']);
    expect(effective.listen).toEqual(started.listen);
    expect(effective.introspection.url).toBe(started.introspection.url);
    expect(effective.introspection.issuer).toBe('https://as.example');
    expect(effective.limits).toMatchObject({ headerBytes: started.limits.headerBytes, urlBytes: 1024, maxConnections: 5 });
    expect(effective).toMatchObject({ binding: 'optional', trustedProxies: [], shutdownGraceSeconds: 3 });
  });

  it('an unchanged file needs no restart and changes nothing', () => {
    const started = settings({ workers: 2 });
    expect(reconcileReload(started, settings({ workers: 2 }))).toEqual({ effective: started, restartRequired: [] });
  });

  it('claim headers are live, but adding the first mapping needs a restart (answers were kept without claims)', () => {
    const mapped = { routes: [{ pathPrefix: '/t', claimHeaders: { 'x-tenant': 'claims.tenant_id' } }] };
    const first = reconcileReload(settings(), settings(mapped));
    // Named where it was added; and none applies until the restart, so none is in effect.
    expect(first.restartRequired).toEqual(['routes[0].claimHeaders']);
    expect(first.effective.routes[0]?.claimHeaders).toBeUndefined();
    expect(reconcileReload(settings(), settings({ claimHeaders: { 'x-t': 'claims.t' } }))).toMatchObject({ restartRequired: ['claimHeaders'], effective: { claimHeaders: {} } });
    expect(reconcileReload(settings(mapped), settings({ claimHeaders: { 'x-t': 'claims.t' } })).restartRequired).toEqual([]);
  });
});
