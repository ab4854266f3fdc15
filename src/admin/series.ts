/**
 * Labelled counters exported at 0 from the start, for every label value known at start: an
 * `increase()` alert then fires on the first event instead of when a series first appears (a
 * counter born at 1 has no increase). Called at start and after each config reload (new routes).
 *
 * `cnfguard_requests_total` gets, per route (each configured route and `default`), every allow
 * reason, every reason id as the decision it ends in (`deny`, or `error`/`aborted` for the reasons
 * access-log.ts counts so), and on report-only routes the binding reasons as `would_deny`.
 * Series whose values are not known at start (responses by status, the pre-routing route `none`,
 * validation results other than `ok`) still appear on their first event.
 */
import type { Settings } from '../config/schema.ts';
import { FAILURE_DECISIONS, REASONS, type ReasonId } from '../oauth/reasons.ts';
import type { IntrospectionOutcome } from '../introspection/client.ts';
import type { AllowReason } from '../pipeline/decide.ts';
import { compileRoutes } from '../pipeline/route.ts';
import type { Metrics } from './metrics.ts';

const ALLOW_REASONS: readonly AllowReason[] = ['bound', 'unbound', 'binding_off', 'report_only'];

// A record, so that a new outcome in client.ts cannot be left out of the series made at start.
const INTROSPECTION_OUTCOME_SET: Record<IntrospectionOutcome, true> = {
  active: true,
  inactive: true,
  refused: true,
  misconfigured: true,
  timeout: true,
  network_error: true,
  http_error: true,
  rate_limited: true,
  invalid_response: true,
  unverified: true,
  circuit_open: true,
  over_peer_budget: true,
  over_total_budget: true,
};
const INTROSPECTION_OUTCOMES = Object.keys(INTROSPECTION_OUTCOME_SET) as IntrospectionOutcome[];

const SHARED_STATE_ERRORS = ['timeout', 'unavailable', 'replica_unacked', 'forged', 'local_fallback', 'secret_mismatch'] as const;

/** What report-only lets through and counts: the failures of a binding check (certificate or proof). */
function isBindingReason(reason: ReasonId): boolean {
  return reason.startsWith('certificate_') || reason === 'token_unbound' || reason === 'cnf_unsupported' || (reason.startsWith('dpop_') && REASONS[reason].status === 401);
}

/** The decision a request ending in `reason` is counted under. */
export function decisionOfReason(reason: ReasonId): string {
  return FAILURE_DECISIONS[reason] ?? 'deny';
}

/** Sets every series `settings` makes known to 0 where it does not exist yet (an existing count is kept). */
export function initialiseSeries(metrics: Metrics, settings: Settings): void {
  const table = compileRoutes(settings);
  const routes = [...table.routes, table.fallback];
  const reasons = Object.keys(REASONS) as ReasonId[];
  for (const route of routes) {
    for (const reason of ALLOW_REASONS) metrics.requests.inc({ decision: 'allow', reason, route: route.id }, 0);
    for (const reason of reasons) metrics.requests.inc({ decision: decisionOfReason(reason), reason, route: route.id }, 0);
    if (route.binding === 'report-only') for (const reason of reasons.filter(isBindingReason)) metrics.requests.inc({ decision: 'would_deny', reason, route: route.id }, 0);
    for (const method of route.methods) metrics.verifiedRequests.inc({ route: route.id, method }, 0);
  }
  const introspects = routes.some((route) => route.validation !== 'jwt');
  if (introspects) for (const outcome of INTROSPECTION_OUTCOMES) metrics.introspectionRequests.inc({ outcome }, 0);
  const sources = new Set(routes.flatMap((route) => (route.validation === 'introspection' ? ['introspection'] : route.validation === 'jwt' ? ['jwt'] : ['jwt', 'introspection'])));
  for (const source of sources) metrics.tokenValidations.inc({ source, result: 'ok' }, 0);
  if (settings.jwt !== undefined) for (const result of ['success', 'failure']) metrics.jwksFetches.inc({ result }, 0);
  metrics.cacheHits.inc({ tier: 'local' }, 0);
  if (settings.sharedState !== undefined) {
    metrics.cacheHits.inc({ tier: 'shared' }, 0);
    for (const kind of SHARED_STATE_ERRORS) metrics.sharedStateErrors.inc({ kind }, 0);
  }
  for (const result of ['success', 'failure']) metrics.certificateReloads.inc({ result }, 0);
  for (const result of ['applied', 'rejected']) metrics.configReloads.inc({ result }, 0);
}
