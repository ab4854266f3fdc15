/**
 * Benchmark child: the floor of a decision API on Node. A plain node:http server with the decision
 * listener's settings (the default limits, `optimizeEmptyRequests`) that answers every check 200
 * with the identity headers a cnfguard decision sends nginx and a fresh request id, and does
 * nothing else: no checks, no access line. What Node's HTTP server and the kernel cost a check.
 *
 *   bare-decision.ts
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { failChild, serveHttpChild } from '../lib/children.ts';

/** What the bench's cnfguard answers nginx for its cache-hit token (values of the same lengths). */
const IDENTITY = {
  'x-auth-subject': 'client1-subject-0000000000',
  'x-auth-client-id': 'client1',
  'x-auth-scope': 'openid read',
  'x-auth-cert-thumbprint': 'JdMdWAffsPsm-X-KaooBRapvKLJ940l2LnKH-2gR__Q',
  'x-forwarded-client-cert': 'Hash=25d31d5807dfb0fb26fe5fe2a68a8105a6af2ca2df78f4a5d8b9ca1fed81ffd;Subject=""',
  'x-auth-binding': 'bound',
};

try {
  const server = createServer(
    { headersTimeout: 10_000, requestTimeout: 120_000, keepAliveTimeout: 5_000, connectionsCheckingInterval: 1000, insecureHTTPParser: false, optimizeEmptyRequests: true },
    (_req, res) => {
      res.writeHead(200, { ...IDENTITY, 'x-request-id': randomUUID(), 'content-length': 0 }).end();
    },
  );
  await serveHttpChild(server);
} catch (err) {
  failChild(err);
}
