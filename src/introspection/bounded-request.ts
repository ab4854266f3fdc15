/**
 * A request to the AS (introspection, JWKS) bounded by one deadline from start to answer.
 *
 * undici lets an abort wait while a connection is being made: a signal that fires during the TCP
 * connect or the TLS handshake rejects nothing until the connector gives up, after its own connect
 * timeout (10 s by default). An AS address that accepts TCP but never completes TLS then held each
 * request ~10.5 s whatever `timeoutMs` said. So the dispatcher's connect timeout is set to the
 * deadline (`connectWithin`), and the call itself races the signal: it rejects with the signal's
 * reason (a `TimeoutError`) at the deadline, whatever undici is doing.
 */
import type { Dispatcher } from 'undici';
import { request, type RequestOptions } from '../undici.ts';

/** undici Agent `connect` options bounding the TCP connect and TLS handshake by `timeoutMs`. */
export function connectWithin(timeoutMs: number): { timeout: number } {
  return { timeout: Math.max(1, Math.floor(timeoutMs)) };
}

/**
 * `request(url, options)`, rejected with `signal.reason` once `signal` aborts, even before undici
 * has a connection. An answer that comes after that is discarded.
 */
export function requestWithin(url: string, options: RequestOptions & { signal: AbortSignal }): Promise<Dispatcher.ResponseData> {
  const { signal } = options;
  const call = request(url, options);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    call.then(
      (response) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) void response.body.dump().catch(() => {});
        resolve(response);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}
