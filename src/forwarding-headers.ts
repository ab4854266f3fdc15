/**
 * Headers upstreams read as the original client, host, scheme or URL: only cnfguard sets them.
 * (`X-Original-URL` and `X-Rewrite-URL` re-route IIS and Symfony applications.) A module of its
 * own: the pipeline strips and sets them, the config refuses them as managed header names.
 */
export const FORWARDING_HEADERS: readonly string[] = [
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-server',
  'x-forwarded-scheme',
  'x-forwarded-ssl',
  'x-forwarded-uri',
  'x-forwarded-path',
  'forwarded',
  'x-real-ip',
  'x-client-ip',
  'true-client-ip',
  'x-cluster-client-ip',
  'x-original-url',
  'x-original-uri',
  'x-rewrite-url',
  'x-original-host',
  'x-host',
  'x-request-id',
];
