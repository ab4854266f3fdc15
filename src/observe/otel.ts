/**
 * The {@link Tracer} on OpenTelemetry: spans exported over OTLP/HTTP by a batch processor, a
 * parent-based ratio sampler, W3C Trace Context in and out. Loaded only by a dynamic import when
 * `tracing` is configured (app.ts): importing this module is what loads the SDK.
 *
 * No global is registered (no global tracer provider, context manager or propagator): the request
 * span's context travels in this module's own AsyncLocalStorage, so child spans find their parent
 * without anything else in the process seeing OpenTelemetry.
 */
import asyncHooks from 'node:async_hooks';
import { defaultTextMapGetter, defaultTextMapSetter, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';
import type { RequestSpan, RequestSpanEnd, TraceHeaders, Tracer, UpstreamSpan } from './tracing.ts';

export interface OtelOptions {
  otlpEndpoint: string;
  serviceName: string;
  sampleRatio: number;
  headers: Readonly<Record<string, string>>;
  version: string;
  /** How long a finished span may wait before its batch is exported. */
  scheduledDelayMillis?: number;
}

const propagator = new W3CTraceContextPropagator();

/** One export's deadline; also the most a shutdown waits for the last batch (a collector that black-holes must not hold the drain). */
const EXPORT_TIMEOUT_MS = 5000;

/** `promise`, or nothing once `ms` have passed. */
function bounded(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms).unref()));
  return Promise.race([promise.catch(() => undefined), deadline]).finally(() => clearTimeout(timer));
}

export function createOtelTracer(options: OtelOptions): Tracer {
  const exporter = new OTLPTraceExporter({ url: options.otlpEndpoint, headers: { ...options.headers } });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': options.serviceName, 'service.version': options.version }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(options.sampleRatio) }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: options.scheduledDelayMillis ?? 1000, exportTimeoutMillis: EXPORT_TIMEOUT_MS })],
  });
  const tracer = provider.getTracer('cnfguard', options.version);
  /** The context of the request span the current async call belongs to. */
  const active = new asyncHooks.AsyncLocalStorage<Context>();

  function request(edge: string, method: string | undefined, incoming: TraceHeaders | undefined): RequestSpan {
    const parent = incoming?.traceparent === undefined ? ROOT_CONTEXT : propagator.extract(ROOT_CONTEXT, incoming, defaultTextMapGetter);
    const attributes: Attributes = { 'cnfguard.edge': edge };
    if (method !== undefined) attributes['http.request.method'] = method;
    const span = tracer.startSpan('cnfguard.request', { kind: SpanKind.SERVER, attributes }, parent);
    const context = trace.setSpan(parent, span);
    let ended = false;
    return {
      run: (fn) => active.run(context, fn),
      upstream: (upstream) => upstreamSpan(context, upstream),
      end(facts: RequestSpanEnd) {
        if (ended) return;
        ended = true;
        span.setAttributes({
          'cnfguard.request_id': facts.requestId,
          'cnfguard.route': facts.route,
          'cnfguard.decision': facts.decision,
          'cnfguard.reason': facts.reason,
          'cnfguard.proof_method': facts.proofMethod,
          'http.response.status_code': facts.status,
        });
        if (facts.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: facts.reason });
        span.end();
      },
    };
  }

  function upstreamSpan(parent: Context, upstream: URL): UpstreamSpan {
    const span = tracer.startSpan('cnfguard.upstream', { kind: SpanKind.CLIENT, attributes: { 'server.address': upstream.hostname, 'server.port': Number(upstream.port || (upstream.protocol === 'https:' ? 443 : 80)) } }, parent);
    const headers: Record<string, string> = {};
    propagator.inject(trace.setSpan(parent, span), headers, defaultTextMapSetter);
    let ended = false;
    return {
      headers,
      end(status, failure) {
        if (ended) return;
        ended = true;
        if (status !== undefined) span.setAttribute('http.response.status_code', status);
        if (failure !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: failure });
        span.end();
      },
    };
  }

  async function child<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const parent = active.getStore();
    if (parent === undefined) return fn();
    const span: Span = tracer.startSpan(name, { kind: SpanKind.CLIENT }, parent);
    try {
      return await fn();
    } catch (err) {
      // The error's code (a system error's, or cnfguard's reason id) or name only: a message may quote a server's answer.
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as NodeJS.ErrnoException).code ?? (err as { reason?: string }).reason ?? (err as Error).name });
      throw err;
    } finally {
      span.end();
    }
  }

  return { request, child, shutdown: () => bounded(provider.shutdown(), EXPORT_TIMEOUT_MS) };
}
