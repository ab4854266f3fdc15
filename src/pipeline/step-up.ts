/**
 * Step (pure): RFC 9470 step-up. After the token is valid, bound and has its scopes, does the
 * user's authentication meet the route's `stepUp`: an `acr` among `acrValues`, an `auth_time` no
 * older than `maxAgeSeconds`? A token without the claim a requirement needs does not meet it. The
 * refusal carries the requirement for the challenges (`acr_values`, `max_age`), so only a client
 * holding a valid token ever learns it.
 */
import type { TokenInfo } from '../introspection/token-info.ts';
import { GuardError } from '../oauth/reasons.ts';
import type { StepUpPolicy } from './route.ts';

/** Why the token falls short of `stepUp`, as a refusal; undefined when it meets it. `now`: seconds since the epoch. */
export function stepUpFailure(token: Pick<TokenInfo, 'acr' | 'authTime'>, stepUp: StepUpPolicy, now: number): GuardError | undefined {
  const { acrValues, maxAgeSeconds, clockSkewSeconds } = stepUp;
  let detail: string | undefined;
  if (acrValues !== undefined) {
    if (token.acr === undefined) detail = 'no acr';
    else if (!acrValues.includes(token.acr)) detail = 'acr not among stepUp.acrValues';
  }
  if (detail === undefined && maxAgeSeconds !== undefined) {
    const authTime = token.authTime;
    if (authTime === undefined) detail = 'no auth_time';
    else if (authTime - now > clockSkewSeconds) detail = `auth_time ${Math.ceil(authTime - now)} s ahead`;
    else if (now - authTime > maxAgeSeconds + clockSkewSeconds) detail = `auth_time ${Math.floor(now - authTime)} s old (stepUp.maxAgeSeconds: ${maxAgeSeconds})`;
  }
  if (detail === undefined) return undefined;
  return new GuardError('step_up_required', {
    detail,
    stepUp: { ...(acrValues !== undefined && { acrValues: acrValues.join(' ') }), ...(maxAgeSeconds !== undefined && { maxAge: maxAgeSeconds }) },
  });
}
