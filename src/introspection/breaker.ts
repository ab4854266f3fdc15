/**
 * A circuit breaker around introspection: after `failureThreshold` consecutive AS faults it stops
 * calling the AS for `openMs` (longer when the AS sent Retry-After, up to a minute), failing fast
 * with 503 instead of piling requests onto a dead or overloaded server. Then one request probes:
 * success closes the circuit, failure opens it again. Inactive tokens are answers, not faults.
 *
 * Only `introspection_unavailable` counts (timeouts, transport errors, 408/429/5xx, unusable
 * answers): faults no request can cause on purpose. A token the AS refuses (400) is an inactive
 * answer, and `introspection_misconfigured` (the AS refusing cnfguard's credentials) is a
 * configuration error, not an outage: neither opens the circuit, so junk tokens cannot open it
 * for everybody.
 */
import { GuardError } from '../oauth/reasons.ts';
import type { Introspect } from './client.ts';

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  failureThreshold: number;
  openMs: number;
  /** Milliseconds since the epoch. */
  now?: () => number;
  onShortCircuit?: () => void;
  onStateChange?: (state: CircuitState) => void;
}

const MAX_RETRY_AFTER_MS = 60_000;

export function withCircuitBreaker(introspect: Introspect, options: BreakerOptions): Introspect {
  const now = options.now ?? Date.now;
  let failures = 0;
  let openUntil = 0;
  let probing = false;
  let state: CircuitState = 'closed';
  const enter = (next: CircuitState) => {
    if (next !== state) {
      state = next;
      options.onStateChange?.(next);
    }
  };
  const shortCircuit = (retryAfterMs: number): never => {
    options.onShortCircuit?.();
    throw new GuardError('introspection_unavailable', { detail: 'circuit open: not calling the AS', retryAfterSeconds: Math.max(1, Math.ceil(retryAfterMs / 1000)) });
  };

  return async (token) => {
    const t = now();
    if (openUntil > t) return shortCircuit(openUntil - t);
    const probe = openUntil !== 0;
    if (probe) {
      if (probing) return shortCircuit(options.openMs);
      probing = true;
      enter('half-open');
    }
    try {
      const info = await introspect(token);
      failures = 0;
      openUntil = 0;
      enter('closed');
      return info;
    } catch (err) {
      // An answer that fails its signature check (RFC 9701) is the AS failing too.
      if (err instanceof GuardError && (err.reason === 'introspection_unavailable' || err.reason === 'introspection_unverified')) {
        failures++;
        if (probe || failures >= options.failureThreshold) {
          const asked = Math.min((err.retryAfterSeconds ?? 0) * 1000, MAX_RETRY_AFTER_MS);
          openUntil = now() + Math.max(options.openMs, asked);
          enter('open');
        }
      }
      throw err;
    } finally {
      if (probe) probing = false;
    }
  };
}
