/**
 * The listeners and the edges on them, built from the parts the composition root made: the TLS
 * proxy listener (HTTP/1.1, HTTP/2, upgrades), the decision API and the admin listener. What a
 * reload swaps (the runtime, the settings in force) and whether cnfguard is ready or draining are
 * read through {@link ServingState} at each request.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Metrics } from '../admin/metrics.ts';
import { createAdminServer } from '../admin/server.ts';
import { createUpstreamCheck } from '../admin/upstream-check.ts';
import { effectiveConfigYaml } from '../config/effective.ts';
import type { LoadedConfig } from '../config/load.ts';
import type { Settings } from '../config/schema.ts';
import { createDecisionApi } from '../edge/decision-api.ts';
import type { TracingSlot } from '../observe/tracing.ts';
import { createProxyEdge } from '../edge/proxy.ts';
import { createUpgradeEdge, isWebsocketUpgrade } from '../edge/upgrade.ts';
import type { Logger } from '../log.ts';
import { createAccessLog } from '../observe/access-log.ts';
import { createCertificateSource, type CertificateSource } from '../pipeline/client-cert.ts';
import { createBodyBudget } from '../proxy/body.ts';
import { guardConnections, type ConnectionTracker } from '../edge/connection-errors.ts';
import { createForwarder, type Forwarder } from '../proxy/forward.ts';
import type { Runtime } from '../runtime.ts';
import { createTlsServer, type TlsListener } from './tls-server.ts';

/** What every request reads afresh: the runtime and settings in force, and the lifecycle flags. */
export interface ServingState {
  runtime: Runtime;
  /** The settings in force: those started with, then each reload's live keys. */
  current: Settings;
  ready: boolean;
  draining: boolean;
  /** The SHA-256 of the config file in force (as started, then as last applied by a reload), for /status. */
  configSha256?: string | undefined;
}

export interface Listeners {
  listener: TlsListener;
  /** The decision API on `decisionApi.port`. */
  decision: Server | undefined;
  /** The decision API on `decisionApi.socket`. */
  decisionSocket: Server | undefined;
  admin: Server | undefined;
  forwarder: Forwarder;
  certificateSource: CertificateSource;
  connections: ConnectionTracker;
  /** Upgraded sockets, ended after the grace period when draining. */
  upgraded: Set<Duplex>;
}

export interface ListenerParts {
  config: LoadedConfig;
  state: ServingState;
  logger: Logger;
  metrics: Metrics;
  now: () => number;
  /** Start the admin listener (cluster workers leave it to the primary). */
  admin: boolean;
  /** Extra readiness details for /readyz (the shared store's state). */
  details: () => Record<string, string>;
  /** The /status document (admin/status.ts), asked at request time. */
  status?: () => Promise<Record<string, unknown>>;
  /** With `tracing`: where the tracer is once loaded (observe/tracing.ts). */
  tracing?: TracingSlot | undefined;
  /** With `assertion`: the assertion keys' JWKS, served at the admin listener's /jwks.json. */
  jwks?: () => string | undefined;
}

export function createListeners({ config, state, logger, metrics, now, admin, details, status, tracing, jwks }: ListenerParts): Listeners {
  const { settings } = config;
  const upgraded = new Set<Duplex>();
  const forwarder = createForwarder();
  const certificateSource = createCertificateSource({ trustedProxies: settings.trustedProxies, clientCa: config.tls.clientCa, now });
  const accessLog = createAccessLog(logger, metrics);
  const edge = { runtime: () => state.runtime, forwarder, logger, accessLog, certificates: certificateSource, draining: () => state.draining, tracing };
  const proxyEdge = createProxyEdge({ ...edge, metrics, bodyBudget: createBodyBudget(settings.limits.bufferedBodyBytes), requestTimeoutMs: () => state.current.limits.requestTimeoutMs });
  const listener = createTlsServer(config.tls, settings.limits, proxyEdge, settings.listen.http2 ? { onRequest: proxyEdge } : undefined);
  // Only websocket upgrades are tunnelled (edge/upgrade.ts). Any other Upgrade (h2c, TLS/1.x) is a
  // request like any other, its Upgrade dropped as hop-by-hop: RFC 9110 §7.8 lets a server ignore
  // it. (Node's default sends every Upgrade to the 'upgrade' listener, which answered none.)
  (listener.server as { shouldUpgradeCallback?: (req: IncomingMessage) => boolean }).shouldUpgradeCallback = isWebsocketUpgrade;
  const upgradeEdge = createUpgradeEdge({
    ...edge,
    onUpgraded: (socket) => {
      upgraded.add(socket);
      socket.once('close', () => upgraded.delete(socket));
    },
  });
  listener.server.on('upgrade', upgradeEdge);
  // An HTTP/1.1 CONNECT comes as its own event, with the socket (Node closed it unanswered, unlogged):
  // the upgrade edge runs it through the pipeline, which refuses it (method_unsupported), answered and logged.
  listener.server.on('connect', upgradeEdge);
  const connections = guardConnections(listener.server, { logger, accessLog, realm: () => state.runtime.realm, onHandshakeFailure: () => metrics.tlsHandshakeFailures.inc() });
  // The decision API (issue 16): another edge into the same runtime, certificates and access log.
  const decisionDeps = { runtime: () => state.runtime, certificates: certificateSource, accessLog, logger, tracing };
  const decision = settings.decisionApi?.port === undefined ? undefined : createDecisionApi(decisionDeps, settings.limits, 'tcp');
  const decisionSocket = settings.decisionApi?.socket === undefined ? undefined : createDecisionApi(decisionDeps, settings.limits, 'unix');
  const adminServer = !admin
    ? undefined
    : createAdminServer(metrics.registry, {
        ready: () => state.ready,
        details,
        ...(jwks !== undefined && { jwks }),
        upstream: createUpstreamCheck({ upstream: () => state.current.upstream, ...settings.admin.upstreamCheck }),
        status,
        config: () => effectiveConfigYaml({ settings: state.current }),
      });
  return { listener, decision, decisionSocket, admin: adminServer, forwarder, certificateSource, connections, upgraded };
}
