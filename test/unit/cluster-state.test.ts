/**
 * The primary's DPoP state (src/cluster-state.ts) with its workers wired in memory, messages
 * passed asynchronously the way IPC does (a structured clone a tick later).
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { ReplayStoreUnavailableError } from '../../src/state/replay-store.ts';
import { connectToPrimary, createPrimaryState, type WorkerState } from '../../src/cluster-state.ts';

const NOW = 1_800_000_000;

function cluster(workers: number, options: { maxEntries?: number; silent?: boolean } = {}): WorkerState[] {
  const primary = createPrimaryState({ maxEntries: options.maxEntries ?? 1000, now: () => NOW });
  return Array.from({ length: workers }, () => {
    const channel = new EventEmitter();
    const workerEnd = { send: (message: object, callback: (error: Error | null) => void) => setImmediate(() => (channel.emit('message', structuredClone(message)), callback(null))) };
    return connectToPrimary(
      {
        send: (message, callback) => {
          setImmediate(() => {
            if (options.silent !== true) primary.handle(workerEnd, structuredClone(message));
            callback(null);
          });
          return true;
        },
        on: (event, listener) => channel.on(event, listener),
      },
      // Only the silent primary is waited out; a loaded machine never makes the others time out.
      { rotationSeconds: 60, now: () => NOW, timeoutMs: options.silent === true ? 50 : 60_000 },
    );
  });
}

describe('DPoP state held by the cluster primary', () => {
  it('a key remembered through one worker is a replay through every other, also when asked at once', async () => {
    const workers = cluster(4);
    const answers = await Promise.all(workers.flatMap((w) => [w.replayStore.remember('k1', NOW + 60), w.replayStore.remember('k1', NOW + 60)]));
    expect(answers.filter(Boolean)).toHaveLength(1);
    expect(await (workers[2] as WorkerState).replayStore.remember('k2', NOW + 60)).toBe(true);
    expect(await (workers[0] as WorkerState).replayStore.remember('k2', NOW + 60)).toBe(false);
  });

  it('the primary holds one KV: what one worker sets, another reads; a proof key is a replay key in it', async () => {
    const [a, b] = cluster(2) as [WorkerState, WorkerState];
    await a.kv.set('shared', 'v', 60_000);
    expect(await b.kv.get('shared')).toBe('v');
    expect(await b.kv.get('never')).toBeUndefined();
    expect(await a.replayStore.remember('k3', NOW + 60)).toBe(true);
    expect(await b.kv.setIfAbsent('jti:k3', '1', 60_000)).toBe(false);
  });

  it('a nonce one worker issues, every worker accepts', async () => {
    const [a, b, c] = cluster(3) as [WorkerState, WorkerState, WorkerState];
    await Promise.all([a.ready, b.ready, c.ready]);
    const nonce = a.nonces.current();
    expect(b.nonces.accepts(nonce)).toBe(true);
    expect(c.nonces.accepts(nonce)).toBe(true);
    expect(b.nonces.freshFor(nonce)).toBeUndefined();
  });

  it('a full store in the primary is a refusal (full), not a new key', async () => {
    const [w] = cluster(1, { maxEntries: 1000 }) as [WorkerState];
    for (let i = 0; i < 1000; i++) expect(await w.replayStore.remember(`k${i}`, NOW + 60)).toBe(true);
    await expect(w.replayStore.remember('one-more', NOW + 60)).rejects.toSatisfy((e) => e instanceof ReplayStoreUnavailableError && e.reason === 'full');
  });

  it('a primary that does not answer: the worker fails closed (unreachable) and does not start', async () => {
    const [w] = cluster(1, { silent: true }) as [WorkerState];
    await expect(w.replayStore.remember('k', NOW + 60)).rejects.toSatisfy((e) => e instanceof ReplayStoreUnavailableError && e.reason === 'unreachable');
    await expect(w.ready).rejects.toThrow(/did not answer/);
    expect(() => w.nonces.current()).toThrow(/before the nonce key/);
  });

  it('no channel at all: unreachable at once', async () => {
    const w = connectToPrimary({ send: undefined, on: () => undefined }, { rotationSeconds: 60, now: () => NOW, timeoutMs: 10_000 });
    await expect(w.replayStore.remember('k', NOW + 60)).rejects.toBeInstanceOf(ReplayStoreUnavailableError);
    await expect(w.ready).rejects.toThrow(/not connected/);
  });

  it('ignores messages that are not its own', () => {
    const primary = createPrimaryState({ maxEntries: 1000 });
    const end = { send: () => expect.unreachable('answered a foreign message') };
    for (const message of [null, 'x', { type: 'cnfguard:ready' }, { type: 'cnfguard:dpop-state', id: 'x', op: 'nonce-key' }, { type: 'cnfguard:dpop-state', id: 1, op: 'remember', key: 1, exp: 2 }, { type: 'cnfguard:dpop-state', id: 1, op: 'set-if-absent', key: 'k', value: 1, ttlMs: 2 }, { type: 'cnfguard:dpop-state', id: 1, op: 'get', key: 3 }]) {
      expect(primary.handle(end, message)).toBe(false);
    }
  });
});
