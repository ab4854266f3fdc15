/**
 * DPoP state under `workers: N` without `sharedState`: the primary holds the one replay store and
 * the one nonce key, so that N workers behave as one process (issue 26, finding 5). Without it
 * each worker had its own store (one proof accepted up to N times) and its own nonce key (a nonce
 * just issued refused by the other workers).
 *
 * Over the cluster IPC channel (node:cluster messages, private to the primary and its workers):
 * - `nonce-key`: asked once by each worker as it starts; it then makes and checks nonces itself,
 *   with no round trip per request (nonce.ts is stateless given the key).
 * - `get`, `set`, `set-if-absent`: the primary's one memory KV (state/memory-kv.ts), which a
 *   worker sees as a {@link KeyValueStore} and its replay store sits on ({@link replayStoreOn}):
 *   one `set-if-absent` per DPoP proof that passed every other check. Each call runs to
 *   completion in the primary's one thread, so two workers asking for one key never both hear
 *   "new".
 * A worker that hears nothing within {@link ANSWER_TIMEOUT_MS} refuses the proof (503, the same
 * as a full or unreachable store): an unknown answer is never "new".
 */
import { randomBytes } from 'node:crypto';
import { createNonceSource, type NonceSource } from './proof/nonce.ts';
import { StoreUnavailableError, type KeyValueStore } from './state/kv.ts';
import { createMemoryKv, type MemoryKv } from './state/memory-kv.ts';
import { replayStoreOn, type ReplayStore } from './state/replay-store.ts';

const TYPE = 'cnfguard:dpop-state';
/** How long a worker waits for the primary; the primary answers in microseconds unless it is stuck or gone. */
export const ANSWER_TIMEOUT_MS = 2000;

type KvOp = { op: 'get'; key: string } | { op: 'set' | 'set-if-absent'; key: string; value: string; ttlMs: number };
type RequestBody = { op: 'nonce-key' } | KvOp;
type Request = { type: typeof TYPE; id: number } & RequestBody;
/** `key`: the nonce key; `value`: what `get` found (null: nothing); `fresh`: whether `set-if-absent` wrote. */
type Answer = { type: typeof TYPE; id: number; fresh?: boolean; key?: string; value?: string | null; error?: 'full' | 'unreachable' };

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
  let kv: MemoryKv | undefined;
  const run = (op: KvOp): Promise<Omit<Answer, 'type' | 'id'>> => {
    // Made on the first call: a cluster without DPoP routes never holds one.
    const seconds = options.now;
    kv ??= createMemoryKv({ maxEntries: options.maxEntries, ...(seconds !== undefined && { now: () => seconds() * 1000 }) });
    if (op.op === 'get') return kv.get(op.key).then((value) => ({ value: value ?? null }));
    if (op.op === 'set') return kv.set(op.key, op.value, op.ttlMs).then(() => ({}));
    return kv.setIfAbsent(op.key, op.value, op.ttlMs).then((fresh) => ({ fresh }));
  };
  return {
    handle(worker, message) {
      if (!isRequest(message)) return false;
      const { id } = message;
      if (message.op === 'nonce-key') {
        worker.send({ type: TYPE, id, key: nonceKey.toString('base64') }, ignore);
        return true;
      }
      run(message).then(
        (answer) => worker.send({ type: TYPE, id, ...answer }, ignore),
        (err: unknown) => worker.send({ type: TYPE, id, error: err instanceof StoreUnavailableError ? err.reason : 'unreachable' }, ignore),
      );
      return true;
    },
  };
}

function isRequest(message: unknown): message is Request {
  if (typeof message !== 'object' || message === null) return false;
  const m = message as Partial<Record<string, unknown>>;
  if (m.type !== TYPE || typeof m.id !== 'number') return false;
  if (m.op === 'nonce-key') return true;
  if (typeof m.key !== 'string') return false;
  if (m.op === 'get') return true;
  return (m.op === 'set' || m.op === 'set-if-absent') && typeof m.value === 'string' && typeof m.ttlMs === 'number' && !Number.isNaN(m.ttlMs);
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
  /** The primary's memory KV; rejects with {@link StoreUnavailableError} when it does not answer in time. */
  kv: KeyValueStore;
  /** On {@link kv}: rejects with ReplayStoreUnavailableError when the primary does not answer in time. */
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
        reject(new StoreUnavailableError('unreachable', `the cluster primary ${why}`));
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

  const answerOf = async (request: KvOp): Promise<Answer> => {
    const answer = await ask(request);
    if (answer.error !== undefined) throw new StoreUnavailableError(answer.error === 'full' ? 'full' : 'unreachable');
    return answer;
  };
  const kv: KeyValueStore = {
    up: true,
    get: async (key) => (await answerOf({ op: 'get', key })).value ?? undefined,
    set: async (key, value, ttlMs) => void (await answerOf({ op: 'set', key, value, ttlMs })),
    setIfAbsent: async (key, value, ttlMs) => (await answerOf({ op: 'set-if-absent', key, value, ttlMs })).fresh === true,
  };

  return {
    ready,
    nonces: {
      current: () => started().current(),
      accepts: (nonce) => started().accepts(nonce),
      freshFor: (presented) => started().freshFor(presented),
    },
    kv,
    replayStore: replayStoreOn(kv, { now: () => options.now() * 1000 }),
  };
}

/** {@link connectToPrimary} over this process's cluster channel when it is a cluster worker, else undefined. */
export function primaryStateOfWorker(isWorker: boolean, options: WorkerStateOptions): WorkerState | undefined {
  if (!isWorker) return undefined;
  return connectToPrimary({ send: process.send === undefined ? undefined : (message, callback) => (process.send as NonNullable<typeof process.send>)(message, undefined, undefined, callback), on: (event, listener) => process.on(event, listener) }, options);
}
