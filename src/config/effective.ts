/** The effective config as `cnfguard check` prints it: every secret masked. */
import { stringify } from 'yaml';
import type { Settings } from './schema.ts';
import { describeSharedState } from './shared-state-schema.ts';

const MASK = '********';

/** The effective settings as YAML, with every secret masked (for `cnfguard check`). */
export function effectiveConfigYaml(config: { readonly settings: Settings }): string {
  const settings = structuredClone(config.settings) as Settings;
  if (settings.introspection.clientSecret !== undefined) settings.introspection.clientSecret = MASK;
  // redis://user:password@host: the store's password is as secret as the client's.
  if (settings.sharedState?.url !== undefined) settings.sharedState.url = withoutPassword(settings.sharedState.url);
  // Export headers carry credentials (an API key, a bearer token for the collector).
  if (settings.tracing !== undefined) for (const name of Object.keys(settings.tracing.headers)) settings.tracing.headers[name] = MASK;
  // Which store the replicas share, said once above the YAML (a comment: the output stays a valid config).
  const used = settings.sharedState === undefined ? '' : `# sharedState uses ${describeSharedState(settings.sharedState)}\n`;
  return used + stringify(settings);
}

function withoutPassword(value: string): string {
  const url = new URL(value);
  if (url.password === '') return value;
  url.password = MASK;
  return url.toString();
}
