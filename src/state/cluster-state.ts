/**
 * DPoP state under `workers: N` without `sharedState`: the primary holds the one replay store and
 * the one nonce key, so that N workers behave as one process (issue 26, finding 5). Without it
 * each worker had its own store (one proof accepted up to N times) and its own nonce key (a nonce
 * just issued refused by the other workers).
 *
 * Over the cluster IPC channel (node:cluster messages, private to the primary and its workers):
 * - `nonce-key`: asked once by each worker as it starts; it then makes and checks nonces itself,
 *   with no round trip per request (nonce.ts is stateless given the key).
 * - `remember`: one per DPoP proof that passed every other check. The primary's store is a
 *   {@link createMemoryReplayStore}; its `remember` runs to completion in the primary's one
 *   thread, so two workers asking for one key never both hear "new".
 * A worker that hears nothing within {@link ANSWER_TIMEOUT_MS} refuses the proof (503, the same
 * as a full or unreachable store): an unknown answer is never "new".
 */
import { randomBytes } from 'node:crypto';
import { createNonceSource, type NonceSource } from '../proof/nonce.ts';
import { createMemoryReplayStore, ReplayStoreUnavailableError, type ReplayStore } from '../proof/replay-store.ts';

const TYPE = 'cnfguard:dpop-state';
/** How long a worker waits for the primary; the primary answers in microseconds unless it is stuck or gone. */
export const ANSWER_TIMEOUT_MS = 2000;

type RequestBody = { op: 'nonce-key' } | { op: 'remember'; key: string; exp: number };
type Request = { type: typeof TYPE; id: number } & RequestBody;
type Answer = { type: typeof TYPE; id: number; fresh?: boolean; key?: string; error?: 'full' | 'unreachable' };

/** The primary's end of one worker's channel (a cluster Worker). */
export interface WorkerEnd {
  /** With a callback, a worker gone meanwhile is an error passed to it, not an 'error' event that would end the primary. */
  send(message: Answer, callback: (error: Error | null) => void): unknown;
}

const ignore = (): void => {};

export interface PrimaryStateOptions {
  /** `dpop.replayStoreMaxEntries`. */
  maxEntries: number;
  /** Epoch seconds. */
  now?: () => number;
  /** The nonce key; default random, made once here. */
  nonceKey?: Buffer;
}

/** In the primary: answers the workers' messages. `handle` returns false for messages that are not its own. */
export function createPrimaryState(options: PrimaryStateOptions): { handle(worker: WorkerEnd, message: unknown): boolean } {
  const nonceKey = options.nonceKey ?? randomBytes(32);
  let store: ReplayStore | undefined;
  return {
    handle(worker, message) {
      if (!isRequest(message)) return false;
      const { id } = message;
      if (message.op === 'nonce-key') {
        worker.send({ type: TYPE, id, key: nonceKey.toString('base64') }, ignore);
        return true;
      }
      // Made on the first proof: a cluster without DPoP routes never holds one.
      store ??= createMemoryReplayStore({ maxEntries: options.maxEntries, ...(options.now !== undefined && { now: options.now }) });
      store.remember(message.key, message.exp).then(
        (fresh) => worker.send({ type: TYPE, id, fresh }, ignore),
        (err: unknown) => worker.send({ type: TYPE, id, error: err instanceof ReplayStoreUnavailableError ? err.reason : 'unreachable' }, ignore),
      );
      return true;
    },
  };
}

function isRequest(message: unknown): message is Request {
  if (typeof message !== 'object' || message === null) return false;
  const m = message as Partial<Record<string, unknown>>;
  if (m.type !== TYPE || typeof m.id !== 'number') return false;
  return m.op === 'nonce-key' || (m.op === 'remember' && typeof m.key === 'string' && typeof m.exp === 'number');
}

/** A worker's end of its channel to the primary (`process` in a cluster worker). */
export interface PrimaryEnd {
  send?: ((message: Request, callback: (error: Error | null) => void) => boolean) | undefined;
  on(event: 'message', listener: (message: unknown) => void): unknown;
}

export interface WorkerStateOptions {
  /** `dpop.nonceRotationSeconds`. */
  rotationSeconds: number;
  /** Epoch seconds. */
  now: () => number;
  timeoutMs?: number;
}

export interface WorkerState {
  /** Asks the primary; rejects with {@link ReplayStoreUnavailableError} when it does not answer in time. */
  replayStore: ReplayStore;
  /** Nonces from the primary's key: usable once `ready` has resolved. */
  nonces: NonceSource;
  /** Resolves once the nonce key has come; rejects when the primary does not send it. */
  ready: Promise<void>;
}

/** In a worker: the replay store and nonce source the primary holds. */
export function connectToPrimary(primary: PrimaryEnd, options: WorkerStateOptions): WorkerState {
  const timeoutMs = options.timeoutMs ?? ANSWER_TIMEOUT_MS;
  const pending = new Map<number, { answer: (message: Answer) => void; timer: NodeJS.Timeout }>();
  let nextId = 0;
  primary.on('message', (message) => {
    const m = message as Partial<Answer> | null;
    if (m?.type !== TYPE || typeof m.id !== 'number') return;
    const waiting = pending.get(m.id);
    if (waiting === undefined) return; // answered after its deadline: the request already failed closed
    pending.delete(m.id);
    clearTimeout(waiting.timer);
    waiting.answer(m as Answer);
  });

  function ask(request: RequestBody): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const id = nextId++;
      const unreachable = (why: string) => {
        pending.delete(id);
        reject(new ReplayStoreUnavailableError('unreachable', `the cluster primary ${why}`));
      };
      const timer = setTimeout(() => unreachable(`did not answer within ${timeoutMs} ms`), timeoutMs);
      timer.unref();
      pending.set(id, { answer: resolve, timer });
      const failed = (error: Error | null) => {
        if (error === null || !pending.has(id)) return;
        clearTimeout(timer);
        unreachable('is not connected');
      };
      if (primary.send === undefined) failed(new Error('no IPC channel'));
      else primary.send({ type: TYPE, id, ...request }, failed);
    });
  }

  let source: NonceSource | undefined;
  const ready = ask({ op: 'nonce-key' }).then((answer) => {
    if (typeof answer.key !== 'string') throw new Error('the cluster primary sent no nonce key');
    source = createNonceSource({ key: Buffer.from(answer.key, 'base64'), rotationSeconds: options.rotationSeconds, now: options.now });
  });
  // Handled where awaited (app start); until then a rejection is not an unhandled one.
  ready.catch(() => undefined);
  const started = (): NonceSource => {
    if (source === undefined) throw new Error('DPoP nonces used before the nonce key came from the cluster primary');
    return source;
  };

  return {
    ready,
    nonces: {
      current: () => started().current(),
      accepts: (nonce) => started().accepts(nonce),
      freshFor: (presented) => started().freshFor(presented),
    },
    replayStore: {
      async remember(key, expiresAtSeconds) {
        const answer = await ask({ op: 'remember', key, exp: expiresAtSeconds });
        if (answer.error !== undefined) throw new ReplayStoreUnavailableError(answer.error === 'full' ? 'full' : 'unreachable');
        return answer.fresh === true;
      },
    },
  };
}

/** {@link connectToPrimary} over this process's cluster channel when it is a cluster worker, else undefined. */
export function primaryStateOfWorker(isWorker: boolean, options: WorkerStateOptions): WorkerState | undefined {
  if (!isWorker) return undefined;
  return connectToPrimary({ send: process.send === undefined ? undefined : (message, callback) => (process.send as NonNullable<typeof process.send>)(message, undefined, undefined, callback), on: (event, listener) => process.on(event, listener) }, options);
}
