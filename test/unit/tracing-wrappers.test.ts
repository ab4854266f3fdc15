/** The compose-time wrappers of observe/tracing.ts: pass-through until a tracer is loaded, then each call a named child span. */
import { describe, expect, it } from 'vitest';
import { traced, tracedStore, type Tracer, type TracingSlot } from '../../src/observe/tracing.ts';

/** A store like RedisKv: private fields, a getter, methods that use them. */
class Store {
  #values = new Map<string, string>();
  #up = true;
  get up(): boolean {
    return this.#up;
  }
  get(key: string): Promise<string | undefined> {
    return Promise.resolve(this.#values.get(key));
  }
  set(key: string, value: string): Promise<void> {
    this.#values.set(key, value);
    return Promise.resolve();
  }
  setIfAbsent(key: string, value: string): Promise<boolean> {
    if (this.#values.has(key)) return Promise.resolve(false);
    this.#values.set(key, value);
    return Promise.resolve(true);
  }
  close(): void {
    this.#up = false;
  }
}

function recordingTracer(names: string[]): Tracer {
  return {
    request: () => {
      throw new Error('not used');
    },
    child: (name, fn) => {
      names.push(name);
      return fn();
    },
    shutdown: () => Promise.resolve(),
  };
}

describe('tracing wrappers', () => {
  it('traced: a plain call until the tracer is loaded, a named child span after', async () => {
    const names: string[] = [];
    const slot: TracingSlot = { current: undefined };
    const call = traced(slot, 'cnfguard.introspection', (x: number) => Promise.resolve(x * 2));
    expect(await call(1)).toBe(2);
    expect(names).toEqual([]);
    slot.current = recordingTracer(names);
    expect(await call(2)).toBe(4);
    expect(names).toEqual(['cnfguard.introspection']);
  });

  it('tracedStore: the store works as before (private fields, getters, other methods), each call a span', async () => {
    const names: string[] = [];
    const store = tracedStore({ current: recordingTracer(names) }, new Store());
    expect(store.up).toBe(true);
    expect(await store.setIfAbsent('k', 'v')).toBe(true);
    expect(await store.setIfAbsent('k', 'w')).toBe(false);
    await store.set('j', 'x');
    expect(await store.get('k')).toBe('v');
    store.close();
    expect(store.up).toBe(false);
    expect(names).toEqual(['cnfguard.shared_state.set_if_absent', 'cnfguard.shared_state.set_if_absent', 'cnfguard.shared_state.set', 'cnfguard.shared_state.get']);
  });
});
