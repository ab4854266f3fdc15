/** The effective config as `cnfguard check` prints it: every secret masked. */
import { stringify } from 'yaml';
import type { Settings } from './schema.ts';
import { describeSharedState } from './shared-state-schema.ts';
import { MASK, maskUrlPasswords } from './secrets.ts';

/** The effective settings as YAML, with every secret masked (for `cnfguard check`). */
export function effectiveConfigYaml(config: { readonly settings: Settings }): string {
  const settings = structuredClone(config.settings) as Settings;
  if (settings.introspection.clientSecret !== undefined) settings.introspection.clientSecret = MASK;
  // Export headers carry credentials (an API key, a bearer token for the collector).
  if (settings.tracing !== undefined) for (const name of Object.keys(settings.tracing.headers)) settings.tracing.headers[name] = MASK;
  // user:password@ in any URL (the AS, an upstream, the JWKS, redis://): as secret as the client's.
  maskUrlPasswords(settings);
  // Which store the replicas share, said once above the YAML (a comment: the output stays a valid config).
  const used = settings.sharedState === undefined ? '' : `# sharedState uses ${describeSharedState(settings.sharedState)}\n`;
  return used + stringify(settings);
}
