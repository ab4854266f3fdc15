/**
 * What an operator should check when introspection fails, by how it failed: one table shared by
 * the start-up probe, the breaker's warning and the README's troubleshooting table. Only codes,
 * statuses and config key names go in; never a token, a secret or an AS's answer.
 */

/** How an introspection call failed, as far as cnfguard saw it. */
export type IntrospectionFailure =
  | { kind: 'transport'; code: string }
  | { kind: 'timeout' }
  | { kind: 'status'; status: number }
  | { kind: 'answer'; detail: string };

/** TLS verification codes (OpenSSL's names, as Node reports them) that mean: the AS's chain is not trusted. */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_CHAIN_TOO_LONG',
]);

/** `cause` names what happened (a code or a status); `check` says what to look at, by config key. */
export function explainIntrospectionFailure(failure: IntrospectionFailure): { cause: string; check: string } {
  switch (failure.kind) {
    case 'timeout':
      return { cause: 'timeout', check: 'no answer within introspection.timeoutMs: the AS is down, overloaded or unreachable (a firewall dropping packets?)' };
    case 'answer':
      return { cause: failure.detail, check: 'the answer is not an RFC 7662 introspection answer: is introspection.url the introspection endpoint?' };
    case 'status': {
      const { status } = failure;
      const cause = `HTTP ${status}`;
      if (status === 401 || status === 403) {
        return { cause, check: 'the AS refuses cnfguard: check introspection.clientId, the secret (clientSecret or clientSecretFile) and introspection.authMethod' };
      }
      if (status === 404 || status === 405) return { cause, check: 'check the path of introspection.url (the AS has no introspection endpoint there)' };
      if (status >= 300 && status < 400) return { cause, check: 'introspection.url redirects: configure the URL it points to' };
      if (status === 429) return { cause, check: 'the AS rate-limits cnfguard: raise its limit, or lower introspection.budget' };
      if (status >= 500) return { cause, check: 'the AS is failing: see its logs' };
      return { cause, check: 'unexpected status from introspection.url' };
    }
    case 'transport': {
      const { code } = failure;
      if (UNTRUSTED.has(code)) {
        return { cause: code, check: "check introspection.ca: the AS's certificate does not chain to it (unset: to the system's CAs)" };
      }
      if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return { cause: code, check: "the AS's certificate is outside its validity (or this host's clock is wrong)" };
      if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return { cause: code, check: "the AS's certificate does not name the host of introspection.url" };
      if (code === 'ECONNREFUSED') return { cause: code, check: 'nothing listens at introspection.url: the AS is down, or the host or port is wrong' };
      if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return { cause: code, check: 'the host of introspection.url does not resolve' };
      if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return { cause: code, check: 'no route to the host of introspection.url' };
      if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPROTO' || code.startsWith('ERR_SSL_')) {
        return { cause: code, check: 'the AS closed the connection: is it TLS on that port, and does it want a client certificate (authMethod tls_client_auth, introspection.cert and key)?' };
      }
      return { cause: code, check: 'introspection.url could not be reached' };
    }
  }
}
