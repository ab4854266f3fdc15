/**
 * jose, loaded on first use: only configs with `jwt:` or a `dpop` route need it, and loading its
 * ~45 modules is a tenth of `cnfguard run`'s start-up otherwise. jose is ESM; Node 24 loads it
 * synchronously through require (it has no top-level await), so callers stay synchronous.
 */
import { createRequire } from 'node:module';
import type * as Jose from 'jose';

const requireLazily = createRequire(import.meta.url);
let loaded: typeof Jose | undefined;

export function jose(): typeof Jose {
  loaded ??= requireLazily('jose') as typeof Jose;
  return loaded;
}
