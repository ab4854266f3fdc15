/**
 * The shared tier of the token cache: introspection answers every replica may reuse, on any
 * {@link KeyValueStore} (in production the sealed envelope over Redis, so entries are authentic
 * and keys never hold a token). Consulted only on a local miss, by wrapping what the local cache
 * calls then; the local cache's hit path never touches it.
 */
import type { Introspect } from './client.ts';
import type { AnswerSource, BoundedAnswer } from './cache.ts';
import { tokenInfoFromAnswer, type TokenInfo } from './token-info.ts';
import { cacheLifetimeMs } from './answer-cache.ts';
import type { KeyValueStore } from '../state/kv.ts';

/** What the token cache gets from the store on a local miss. */
export interface SharedTier {
  /** The entry's answer and when the entry ends (epoch ms): the local cache keeps it no longer. */
  get(token: string): Promise<BoundedAnswer | undefined>;
  set(token: string, info: TokenInfo, lifetimeMs: number): void;
}

interface SharedEntry {
  v: 1;
  /** Milliseconds since the epoch. */
  until: number;
  /** Whether `a` is the whole answer (claims kept) or only the registered members. */
  c: boolean;
  a: Record<string, unknown>;
}

function answerOf(info: TokenInfo): Record<string, unknown> {
  if (!info.active) return { active: false };
  if (Object.keys(info.claims).length > 0) return { ...info.claims };
  const answer: Record<string, unknown> = { active: true, aud: [...info.aud] };
  const members: [string, unknown][] = [
    ['sub', info.subject],
    ['client_id', info.clientId],
    ['scope', info.scope],
    ['token_type', info.tokenType],
    ['exp', info.exp],
    ['nbf', info.nbf],
    ['iss', info.iss],
    ['cnf', info.cnf],
    ['acr', info.acr],
    ['auth_time', info.authTime],
  ];
  for (const [name, value] of members) if (value !== undefined) answer[name] = value;
  return answer;
}

/**
 * The second tier of the token cache. `get` never rejects: a store error or timeout is a miss
 * (counted by the store) and the caller goes on to the AS. `set` does not wait.
 */
export function createSharedTokenTier(store: KeyValueStore, options: { keepClaims: boolean; now?: () => number; onHit?: () => void }): SharedTier {
  const now = options.now ?? Date.now;
  return {
    async get(token) {
      if (!store.up) return undefined;
      let json: string | undefined;
      try {
        json = await store.get(`token:${token}`);
      } catch {
        return undefined;
      }
      if (json === undefined) return undefined;
      try {
        const entry = JSON.parse(json) as SharedEntry;
        if (entry.v !== 1 || typeof entry.until !== 'number' || !(entry.until > now())) return undefined;
        if (options.keepClaims && !entry.c && entry.a.active === true) return undefined;
        const info = tokenInfoFromAnswer(entry.a, { keepClaims: options.keepClaims });
        options.onHit?.();
        return { info, untilMs: entry.until };
      } catch {
        return undefined;
      }
    },
    set(token, info, lifetimeMs) {
      if (!store.up || lifetimeMs <= 0) return;
      const entry: SharedEntry = { v: 1, until: now() + lifetimeMs, c: Object.keys(info.claims).length > 0, a: answerOf(info) };
      store.set(`token:${token}`, JSON.stringify(entry), lifetimeMs).catch(() => undefined);
    },
  };
}

/**
 * `introspect` with the shared tier in front of it. The token cache calls this only on a local miss
 * (inside its single-flight), so its hit path never touches the store. Answers from the AS are
 * written with the cache's TTL rules; answers from the store are not written back, and carry the
 * end of their entry, so the local cache keeps them no longer than the store does: the TTL rules
 * hold for the deployment as a whole (an answer is reused at most `maxTtlSeconds` after the AS
 * gave it, on whichever replica), not afresh on each replica.
 */
export function withSharedTier(introspect: Introspect, tier: SharedTier, rules: { maxTtlSeconds: number; negativeTtlSeconds: number; now?: () => number }): AnswerSource {
  const now = rules.now ?? Date.now;
  return async (token) => {
    const shared = await tier.get(token);
    if (shared !== undefined) return shared;
    const info = await introspect(token);
    tier.set(token, info, cacheLifetimeMs(info, now(), rules));
    return info;
  };
}
