/**
 * Traces (issue 28), as the rest of cnfguard sees them: a small interface, with no OpenTelemetry
 * import. The implementation (otel.ts) is loaded by a dynamic import at start, only when `tracing`
 * is configured; until then, and always when it is not, nothing of OpenTelemetry is loaded and an
 * edge's cost is one undefined check (`deps.tracing?.current`).
 *
 * Attributes are route ids, reason ids, statuses, methods and host names: never a token, a proof,
 * a key, a header value or a query.
 */

/** W3C Trace Context headers of a request (RFC-like: https://www.w3.org/TR/trace-context/). */
export interface TraceHeaders {
  readonly traceparent: string | undefined;
  readonly tracestate: string | undefined;
}

/** What a finished request's span records. */
export interface RequestSpanEnd {
  /** The request id of the access line and `X-Request-Id`: a trace and a log line name each other. */
  requestId: string;
  route: string;
  decision: string;
  reason: string;
  status: number;
  /** The proof methods that verified the token (`mtls`, `dpop`, `dpop+mtls`), or `none`. */
  proofMethod: string;
}

/** The upstream call's span: the headers that name it to the upstream, and its end. */
export interface UpstreamSpan {
  /** `traceparent` (and `tracestate` when there is one) for the upstream request: they replace any the client sent. */
  readonly headers: Readonly<Record<string, string>>;
  end(status: number | undefined, failure?: string): void;
}

/** One request's `cnfguard.request` span. */
export interface RequestSpan {
  /** Runs `fn` with this span as the parent of the child spans started within it (introspection, JWKS, store). */
  run<T>(fn: () => T): T;
  /** Starts the `cnfguard.upstream` child span. */
  upstream(upstream: URL): UpstreamSpan;
  /** Ends the span (once; later calls do nothing). */
  end(facts: RequestSpanEnd): void;
}

export interface Tracer {
  /**
   * Starts a request's span. `incoming`: the request's trace headers, given only when its peer is
   * a `trustedProxies` peer (the decision API: its peers are); otherwise a new trace starts.
   */
  request(edge: string, method: string | undefined, incoming: TraceHeaders | undefined): RequestSpan;
  /** Runs `fn` in a child span of the request span it runs under; with none, just runs it. */
  child<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** Exports what is left and stops. */
  shutdown(): Promise<void>;
}

/** Where the tracer is, once loaded: made at composition (sync), filled at start (async import). */
export interface TracingSlot {
  current: Tracer | undefined;
}

/** `fn`, each call in a child span `name` once the tracer is loaded. */
export function traced<A extends unknown[], R>(slot: TracingSlot, name: string, fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return (...args) => (slot.current === undefined ? fn(...args) : slot.current.child(name, () => fn(...args)));
}

/** The trace headers of a request's header object (first line of each). */
export function traceHeadersOf(headers: Readonly<Record<string, string | string[] | undefined>>): TraceHeaders {
  const first = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);
  return { traceparent: first(headers.traceparent), tracestate: first(headers.tracestate) };
}

/** A key-value store whose calls are child spans (`cnfguard.shared_state.get` …) once the tracer is loaded. */
export function tracedStore<S extends { get(key: string): Promise<string | undefined>; set(key: string, value: string, ttlMs: number): Promise<void>; setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> }>(slot: TracingSlot, store: S): S {
  const get = traced(slot, 'cnfguard.shared_state.get', (key: string) => store.get(key));
  const set = traced(slot, 'cnfguard.shared_state.set', (key: string, value: string, ttlMs: number) => store.set(key, value, ttlMs));
  const setIfAbsent = traced(slot, 'cnfguard.shared_state.set_if_absent', (key: string, value: string, ttlMs: number) => store.setIfAbsent(key, value, ttlMs));
  return new Proxy(store, {
    get(target, property) {
      if (property === 'get') return get;
      if (property === 'set') return set;
      if (property === 'setIfAbsent') return setIfAbsent;
      const value: unknown = Reflect.get(target, property);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
