/**
 * The two parts of undici cnfguard uses, Agent and a request through one, loaded without the
 * rest of the package. undici's index loads every feature it has (fetch, WebSocket, EventSource,
 * caches, mocks, proxies, retries): ~14 MB of RSS and ~50 ms of start-up that a sidecar pays in
 * every replica for nothing. These are undici's own modules (the package has no `exports` map, so
 * its files are importable); test/unit/undici.test.ts checks they are the very objects the
 * package exports, so an upgrade that moves them fails there and not in production.
 */
import { createRequire } from 'node:module';
import type { Agent as UndiciAgent, Dispatcher } from 'undici';

const load = createRequire(import.meta.url);

export const Agent = load('undici/lib/dispatcher/agent.js') as typeof UndiciAgent;
export type Agent = UndiciAgent;

/** undici's `Dispatcher.request` (what its index puts on every dispatcher's prototype). */
const dispatcherRequest = load('undici/lib/api/api-request.js') as (this: Dispatcher, options: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;

export type RequestOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { dispatcher: Dispatcher; method?: Dispatcher.HttpMethod };

/** As undici's `request(url, { dispatcher, ... })` for an absolute URL (the method defaults to GET). */
export function request(url: string, options: RequestOptions): Promise<Dispatcher.ResponseData> {
  const { dispatcher, ...rest } = options;
  const target = new URL(url);
  return dispatcherRequest.call(dispatcher, { ...rest, origin: target.origin, path: `${target.pathname}${target.search}`, method: options.method ?? 'GET' });
}
