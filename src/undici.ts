/**
 * The two parts of undici cnfguard uses, Agent and a request through one, loaded without the
 * rest of the package. undici's index loads every feature it has (fetch, WebSocket, EventSource,
 * caches, mocks, proxies, retries): ~14 MB of RSS and ~50 ms of start-up that a sidecar pays in
 * every replica for nothing. These are undici's own modules (the package has no `exports` map, so
 * its files are importable); test/unit/undici.test.ts checks they are the very objects the
 * package exports, so an upgrade that moves them fails there and not in production.
 * Imported, not required: so the build bundles them (idle RSS, issue 32: loading ~25 files from
 * node_modules at start-up was half of the path work that got Node's path normalising optimised
 * by TurboFan, whose code then stays paged in). Their types: src/undici-parts.d.ts.
 */
import type { Agent as UndiciAgent, Dispatcher } from 'undici';
import undiciAgent from 'undici/lib/dispatcher/agent.js';
/** undici's `Dispatcher.request` (what its index puts on every dispatcher's prototype). */
import dispatcherRequest from 'undici/lib/api/api-request.js';

export const Agent = undiciAgent;
export type Agent = UndiciAgent;

export type RequestOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { dispatcher: Dispatcher; method?: Dispatcher.HttpMethod };

/** As undici's `request(url, { dispatcher, ... })` for an absolute URL (the method defaults to GET). */
export function request(url: string, options: RequestOptions): Promise<Dispatcher.ResponseData> {
  const { dispatcher, ...rest } = options;
  const target = new URL(url);
  return dispatcherRequest.call(dispatcher, { ...rest, origin: target.origin, path: `${target.pathname}${target.search}`, method: options.method ?? 'GET' });
}
