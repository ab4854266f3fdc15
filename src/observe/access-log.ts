/**
 * What a finished request was, as one access line and one counter increment. The mapping is
 * pure (outcomeOf, entryOf); the line is then written by hand, since at the default
 * `logLevel: info` a generic serialiser building it cost a quarter of the throughput.
 */
import pino from 'pino';
import type { Metrics } from '../admin/metrics.ts';
import type { Logger } from '../log.ts';
import { FAILURE_DECISIONS, type GuardError, type OutcomeDecision } from '../oauth/reasons.ts';
import type { Verdict } from '../pipeline/pipeline.ts';

export interface FinishedRequest {
  requestId: string;
  method: string | undefined;
  /** The path as matched (never the query: it may carry secrets). */
  path: string | undefined;
  status: number;
  verdict: Verdict | undefined;
  /** What went wrong after the verdict: the upstream, the body, the client, or cnfguard itself. */
  failure: GuardError | undefined;
  upstreamStatus: number | undefined;
  thumbprint: string | undefined;
  latencyMs: number;
  /** Which edge answered, when not the proxy listener (e.g. `decision-api/nginx`). */
  edge?: string;
  /** The TCP peer's address. */
  client?: string | undefined;
  /** The client a `trustedProxies` peer names (last `X-Forwarded-For` entry, an IP address). */
  forwardedFor?: string | undefined;
  /** Bytes received and sent for this request (see observe/bytes.ts for what they count). */
  bytesIn?: number | undefined;
  bytesOut?: number | undefined;
}

export interface Outcome {
  decision: OutcomeDecision;
  reason: string;
  route: string;
  level: 'info' | 'warn';
  message: string;
  detail: string | undefined;
}

/** The decision counted and logged for a finished request: what it became, not only what was decided. */
export function outcomeOf(request: Pick<FinishedRequest, 'verdict' | 'failure'>): Outcome {
  const { verdict, failure } = request;
  const route = verdict?.route.id ?? 'none';
  if (failure !== undefined) {
    const decision = FAILURE_DECISIONS[failure.reason] ?? (failure.status >= 500 ? 'error' : 'deny');
    return { decision, reason: failure.reason, route, level: 'info', message: 'request', detail: failure.detail };
  }
  const decision = verdict?.decision;
  if (decision === undefined) return { decision: 'error', reason: 'internal_error', route, level: 'info', message: 'request', detail: undefined };
  if (!decision.allow) return { decision: 'deny', reason: decision.error.reason, route, level: 'info', message: 'request', detail: decision.error.detail };
  if (decision.wouldDeny !== undefined) {
    return { decision: 'would_deny', reason: decision.wouldDeny.reason, route, level: 'warn', message: 'report-only: would deny', detail: decision.wouldDeny.detail };
  }
  return { decision: 'allow', reason: decision.reason, route, level: 'info', message: 'request', detail: undefined };
}

/** The thumbprints a refused (or report-only) binding compared, for debug lines: names and values alternating. */
function evidenceOf(request: Pick<FinishedRequest, 'verdict' | 'failure'>): (string | undefined)[] {
  const decision = request.verdict?.decision;
  const error = request.failure ?? (decision === undefined ? undefined : decision.allow ? decision.wouldDeny : decision.error);
  const evidence = error?.evidence;
  if (evidence === undefined) return [];
  return ['cnfMember', evidence.member, 'presented', evidence.presented, 'bound', evidence.bound];
}

/**
 * The fields of the access line, in order, names and values alternating in one array (one
 * allocation a request, not one per field); undefined ones are left out of the line. With
 * `debug`, a binding failure's line also names the cnf member, the presented thumbprint and the
 * token's bound value.
 */
export function fieldsOf(request: FinishedRequest, outcome: Outcome, debug = false): (string | number | undefined)[] {
  const decision = request.verdict?.decision;
  const fields = [
    'reqId', request.requestId,
    'method', request.method,
    'path', request.path,
    'status', request.status,
    'decision', outcome.decision,
    'reason', outcome.reason,
    'route', request.verdict?.route.id,
    'client', request.client,
    'forwardedFor', request.forwardedFor,
    'host', request.verdict?.host,
    // The validated token's client_id, on denials too (absent when no token was validated).
    'clientId', decision?.allow === true ? decision.identity.clientId : request.verdict?.clientId,
    'validation', request.verdict?.source,
    'proof', decision?.allow === true ? decision.verifiedBy?.join('+') : undefined,
    'thumbprint', request.thumbprint,
    'upstreamStatus', request.upstreamStatus,
    'latencyMs', request.latencyMs,
    'bytesIn', request.bytesIn,
    'bytesOut', request.bytesOut,
    'detail', outcome.detail,
    'edge', request.edge,
  ];
  if (debug && outcome.decision !== 'allow') fields.push(...evidenceOf(request));
  return fields;
}

/** The same fields as [name, value] pairs. */
export function entryOf(request: FinishedRequest, outcome: Outcome, debug = false): [string, string | number | undefined][] {
  const fields = fieldsOf(request, outcome, debug);
  const entry: [string, string | number | undefined][] = [];
  for (let i = 0; i < fields.length; i += 2) entry.push([fields[i] as string, fields[i + 1]]);
  return entry;
}

// eslint-disable-next-line no-control-regex -- control characters are exactly what JSON must escape
const NEEDS_ESCAPING = /["\\\u0000-\u001f\u007f-\uffff]/;

function jsonString(value: string): string {
  return NEEDS_ESCAPING.test(value) ? JSON.stringify(value) : `"${value}"`;
}


const LEVELS = { info: 30, warn: 40 } as const;

let isoMs = -1;
let isoFragment = '';
/** pino's isoTime (`,"time":"…Z"`), formatted once per millisecond: a busy proxy writes several lines in one. */
function isoTimeNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    isoFragment = `,"time":"${new Date(ms).toISOString()}"`;
  }
  return isoFragment;
}

type LevelFormatter = (label: string, number: number) => Record<string, unknown>;
/** Each logger's `"level":…` member per level, as its `formatters.level` renders it (computed once). */
const levelFragments = new WeakMap<object, Record<'info' | 'warn', string>>();

function levelFragment(logger: Logger, level: 'info' | 'warn'): string {
  let fragments = levelFragments.get(logger);
  if (fragments === undefined) {
    const formatter = ((logger as unknown as Record<symbol, { level?: LevelFormatter } | undefined>)[pino.symbols.formattersSym]?.level ?? ((_label, number) => ({ level: number }))) as LevelFormatter;
    const render = (label: 'info' | 'warn') => JSON.stringify(formatter(label, LEVELS[label])).slice(1, -1);
    fragments = { info: render('info'), warn: render('warn') };
    levelFragments.set(logger, fragments);
  }
  return fragments[level];
}

/**
 * One JSON line, the same shape pino writes (level, time, the logger's bindings, the fields, msg),
 * straight to the logger's destination.
 */
export function accessLine(logger: Logger, level: 'info' | 'warn', fields: readonly (string | number | undefined)[], message: string): string {
  const internals = logger as unknown as Record<symbol, unknown>;
  // The logger's own time format (`,"time":…`) and bindings (`,"service":…,"pid":…`).
  const timeOf = internals[pino.symbols.timeSym] as () => string;
  const time = timeOf === pino.stdTimeFunctions.isoTime ? isoTimeNow() : timeOf();
  let line = `{${levelFragment(logger, level)}${time}${(internals[pino.symbols.chindingsSym] as string | undefined) ?? ''}`;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1];
    if (value === undefined) continue;
    line += typeof value === 'number' ? `,"${name}":${value}` : `,"${name}":${jsonString(value)}`;
  }
  return `${line},"msg":${jsonString(message)}}\n`;
}

export interface AccessLog {
  /** Counts the request and writes its line; returns how it was counted (a trace span says the same). */
  record(request: FinishedRequest): Outcome;
}

export function createAccessLog(logger: Logger, metrics: Metrics): AccessLog {
  // `upstream:<route>`, the last-seen key of a route's upstream (admin/status.ts reads it), made once per route.
  const upstreamKeys = new Map<string, string>();
  const upstreamKey = (route: string): string => {
    let key = upstreamKeys.get(route);
    if (key === undefined) upstreamKeys.set(route, (key = `upstream:${route}`));
    return key;
  };
  return {
    record(request) {
      const outcome = outcomeOf(request);
      metrics.requestTally.inc(outcome.decision, outcome.reason, outcome.route);
      metrics.responseTally.inc(outcome.route, request.status);
      metrics.requestDuration.observe(outcome.route, request.latencyMs / 1000);
      if (request.upstreamStatus !== undefined) metrics.lastSeen.record(upstreamKey(outcome.route), true, request.upstreamStatus);
      else if (outcome.decision === 'error' && outcome.reason.startsWith('upstream_')) metrics.lastSeen.record(upstreamKey(outcome.route), false, outcome.reason);
      const decision = request.verdict?.decision;
      if (outcome.decision === 'allow' && decision?.allow === true && decision.verifiedBy !== undefined) metrics.verifiedTally.inc(outcome.route, decision.verifiedBy.join('+'));
      // The line is not even built when its level is off (logLevel: warn on a busy gateway).
      if (!logger.isLevelEnabled(outcome.level)) return outcome;
      const stream = (logger as unknown as Record<symbol, { write(line: string): void }>)[pino.symbols.streamSym];
      const debug = outcome.decision !== 'allow' && logger.isLevelEnabled('debug');
      stream?.write(accessLine(logger, outcome.level, fieldsOf(request, outcome, debug), outcome.message));
      return outcome;
    },
  };
}
