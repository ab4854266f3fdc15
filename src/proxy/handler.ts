/**
 * The HTTP edge of the pipeline: gathers plain request facts (certificate, Authorization lines,
 * target, form body), asks the guard, then renders the refusal or forwards with identity headers.
 * Also the one place that logs a request and counts its decision.
 */
import { randomUUID } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { Readable, Transform, type Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Metrics } from '../admin/metrics.ts';
import { WELL_KNOWN_PREFIX, type MetadataDirectory } from '../discovery/resource-metadata.ts';
import type { Logger } from '../log.ts';
import { GuardError, renderError, type RenderedError } from '../oauth/errors.ts';
import type { CertificateSource, ClientCertificate } from '../pipeline/client-cert.ts';
import type { Decision } from '../pipeline/decide.ts';
import { pathOf, type Authorize, type Verdict } from '../pipeline/guard.ts';
import { setIdentityHeaders, stripManagedHeaders } from '../pipeline/identity-headers.ts';
import { hostName, type RoutePolicy } from '../pipeline/route.ts';
import { isFormContentType } from '../pipeline/token.ts';
import { removeHopByHop, setForwardedHeaders, type Forwarder } from './forward.ts';

/** Everything a config reload may change, swapped as one object: a request sees one version. */
export interface Policy {
  authorize: Authorize;
  metadata: MetadataDirectory;
  realm: string;
  /** Every identity and claim header any route sets; stripped from every inbound request. */
  managedHeaders: readonly string[];
  formBodyBytes: number;
}

export interface HandlerDependencies {
  policy: () => Policy;
  forwarder: Forwarder;
  metrics: Metrics;
  logger: Logger;
  certificates: CertificateSource;
  /** While draining, every response closes its connection. */
  draining: () => boolean;
  /** Upgraded (websocket) sockets, so shutdown can end them after the grace period. */
  onUpgraded?: (socket: Duplex) => void;
}

type FormRead = { body: Buffer | undefined; tooLarge: boolean };

/** Reads a form body up to `limit` bytes; larger bodies are left unread and reported. */
async function readFormBody(req: IncomingMessage, limit: number): Promise<FormRead> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) return { body: undefined, tooLarge: true };
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return { body: undefined, tooLarge: true };
    chunks.push(chunk);
  }
  return { body: Buffer.concat(chunks), tooLarge: false };
}

/** The request body, cut off (and `onExceeded` called once) when it passes `limit` bytes. */
function limitBody(req: IncomingMessage, limit: number, onExceeded: () => void): Readable {
  let seen = 0;
  let exceeded = false;
  const limiter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen <= limit) return callback(null, chunk);
      if (!exceeded) {
        exceeded = true;
        req.unpipe(limiter);
        onExceeded();
      }
      callback();
    },
  });
  return req.pipe(limiter);
}

export interface RequestHandlers {
  onRequest(req: IncomingMessage, res: ServerResponse): void;
  onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** What Node's HTTP parser refused (smuggling attempts, oversized headers, slow clients). */
  onClientError(err: NodeJS.ErrnoException, socket: Duplex): void;
}

/** A complete HTTP/1.1 response written straight to a socket, closing it. */
function rawResponse(rendered: RenderedError, extra: Record<string, string> = {}): string {
  const headers = { ...rendered.headers, ...extra, 'content-length': String(Buffer.byteLength(rendered.body)), connection: 'close' };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return `HTTP/1.1 ${rendered.status} ${STATUS_CODES[rendered.status] ?? ''}\r\n${lines.join('')}\r\n${rendered.body}`;
}

interface AccessLogFields {
  id: string;
  req: IncomingMessage;
  status: number;
  started: number;
  verdict: Verdict | undefined;
  certificate: ClientCertificate | undefined;
  upstreamStatus?: number | undefined;
  error?: GuardError | undefined;
}

export function createHandlers(deps: HandlerDependencies): RequestHandlers {
  const { forwarder, metrics, logger } = deps;

  const render = (policy: Policy, err: GuardError, route: RoutePolicy): RenderedError =>
    renderError(err, { realm: policy.realm, ...(route.resourceMetadataUrl !== undefined && { challengeParams: { resource_metadata: route.resourceMetadataUrl } }) });

  function count(route: string, decision: Decision): void {
    if (!decision.allow) metrics.requests.inc({ decision: 'deny', reason: decision.error.reason, route });
    else if (decision.wouldDeny !== undefined) metrics.requests.inc({ decision: 'would_deny', reason: decision.wouldDeny.reason, route });
    else metrics.requests.inc({ decision: 'allow', reason: decision.reason, route });
  }

  /** One line per request: never the token, the query string or a header value. */
  function accessLog(fields: AccessLogFields): void {
    const { verdict, error } = fields;
    const decision = verdict?.decision;
    const denied = decision !== undefined && !decision.allow ? decision.error : undefined;
    const wouldDeny = decision?.allow ? decision.wouldDeny : undefined;
    // The line is not even built when its level is off (logLevel: warn on a busy gateway).
    if (!logger.isLevelEnabled(wouldDeny !== undefined ? 'warn' : 'info')) return;
    const detail = (denied ?? wouldDeny ?? error)?.detail;
    const entry = {
      reqId: fields.id,
      method: fields.req.method,
      path: pathOf(fields.req.url ?? '/'),
      status: fields.status,
      decision: decision === undefined ? 'error' : decision.allow ? (wouldDeny ? 'would_deny' : 'allow') : 'deny',
      reason: denied?.reason ?? wouldDeny?.reason ?? (decision?.allow ? decision.reason : error?.reason),
      route: verdict?.route.id,
      clientId: decision?.allow ? decision.identity.clientId : undefined,
      thumbprint: fields.certificate?.thumbprint,
      upstreamStatus: fields.upstreamStatus,
      latencyMs: Math.round((performance.now() - fields.started) * 100) / 100,
      ...(detail !== undefined && { detail }),
      ...(error !== undefined && { upstreamError: error.reason }),
    };
    if (wouldDeny !== undefined) logger.warn(entry, 'report-only: would deny');
    else logger.info(entry, 'request');
  }

  async function gather(policy: Policy, req: IncomingMessage, readForm: boolean) {
    let certificate: ClientCertificate | undefined;
    let certificateError: GuardError | undefined;
    try {
      certificate = deps.certificates.certificateOf({
        socket: (req.socket as Partial<TLSSocket>).encrypted === true ? (req.socket as TLSSocket) : undefined,
        peerAddress: req.socket.remoteAddress,
        headers: req.headers,
        headersDistinct: req.headersDistinct,
      });
    } catch (err) {
      if (!(err instanceof GuardError)) throw err;
      certificateError = err;
    }
    // Identity headers are the client's to forge: gone before anything else looks at the request.
    stripManagedHeaders(req.headers, policy.managedHeaders);
    let form: FormRead = { body: undefined, tooLarge: false };
    if (readForm && isFormContentType(req.headers['content-type'])) form = await readFormBody(req, policy.formBodyBytes);
    const declaredLength = req.headers['content-length'];
    const verdict = await policy.authorize({
      hostHeaders: req.headersDistinct.host,
      headerCount: req.rawHeaders.length / 2,
      contentLength: declaredLength === undefined ? undefined : Number(declaredLength),
      authorization: req.headersDistinct.authorization,
      target: req.url ?? '/',
      host: hostName(req.headers.host),
      formBody: form.body,
      formBodyTooLarge: form.tooLarge,
      certificate,
      certificateError,
    });
    return { certificate, verdict, form };
  }

  /** Headers for the upstream, and the path the route was matched on. */
  function prepareForwarding(req: IncomingMessage, verdict: Verdict, decision: Extract<Decision, { allow: true }>, upgrade: boolean, id: string): void {
    const { route } = verdict;
    removeHopByHop(req.headers, upgrade);
    if (route.stripAuthorization) delete req.headers.authorization;
    setIdentityHeaders(req.headers, decision.identity, route.headerNames, route.claimHeaders);
    setForwardedHeaders(req.headers, req.socket.remoteAddress);
    req.headers['x-request-id'] = id;
    if (req.url !== verdict.target) req.url = verdict.target;
  }

  function sendError(policy: Policy, res: ServerResponse, err: GuardError, route: RoutePolicy, id: string): void {
    const rendered = render(policy, err, route);
    res.writeHead(rendered.status, { ...rendered.headers, 'content-length': Buffer.byteLength(rendered.body), 'x-request-id': id });
    res.end(rendered.body);
  }

  /** A failure after forwarding began: the error if nothing was sent yet, else the connection is cut. */
  function failForwarding(policy: Policy, res: ServerResponse, err: GuardError, route: RoutePolicy, id: string): void {
    if (res.headersSent) res.destroy();
    else sendError(policy, res, err, route, id);
  }

  /** RFC 9728 metadata is public: answered before any token check. */
  function serveMetadata(policy: Policy, req: IncomingMessage, res: ServerResponse): boolean {
    if ((req.method !== 'GET' && req.method !== 'HEAD') || !req.url?.startsWith(WELL_KNOWN_PREFIX)) return false;
    const body = policy.metadata.lookup(hostName(req.headers.host), pathOf(req.url));
    if (body === undefined) return false;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'max-age=300' });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  }

  async function handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const policy = deps.policy();
    if (deps.draining()) res.shouldKeepAlive = false;
    if (serveMetadata(policy, req, res)) return;
    const id = randomUUID();
    let verdict: Verdict | undefined;
    let certificate: ClientCertificate | undefined;
    let failure: GuardError | undefined;
    let upstreamStatus: number | undefined;
    res.once('close', () => accessLog({ id, req, status: res.statusCode, started, verdict, certificate, upstreamStatus, error: failure }));
    try {
      const gathered = await gather(policy, req, true);
      ({ verdict, certificate } = gathered);
      const { decision, route } = verdict;
      count(route.id, decision);
      if (!decision.allow) {
        if (gathered.form.tooLarge) res.shouldKeepAlive = false; // the unread body cannot be skipped safely
        sendError(policy, res, decision.error, route, id);
        return;
      }
      // A declared length was checked by the guard; a chunked body is counted as it streams.
      const chunked = req.headers['content-length'] === undefined && req.headers['transfer-encoding'] !== undefined;
      prepareForwarding(req, verdict, decision, false, id);
      res.setHeader('x-request-id', id);
      const forwardedAt = performance.now();
      const abort = chunked ? new AbortController() : undefined;
      const body =
        gathered.form.body !== undefined
          ? Readable.from([gathered.form.body])
          : chunked
            ? limitBody(req, route.maxBodyBytes, () => {
                failure = new GuardError('body_too_large', { detail: 'chunked body over maxBodyBytes' });
                abort?.abort();
                res.shouldKeepAlive = false; // the rest of the body is not read
                failForwarding(policy, res, failure, route, id);
              })
            : undefined;
      forwarder.web(req, res, route.upstream, {
        timeoutMs: route.upstreamTimeoutMs,
        ...(abort !== undefined && { signal: abort.signal }),
        ...(body !== undefined && { body }),
        onResponse: (status) => {
          upstreamStatus = status;
          if (deps.draining()) res.shouldKeepAlive = false;
          metrics.upstreamDuration.observe({ route: route.id }, (performance.now() - forwardedAt) / 1000);
        },
        onError: (err) => {
          failure = err;
          failForwarding(policy, res, err, route, id);
        },
      });
    } catch (err) {
      logger.error({ reqId: id, err }, 'request handling failed');
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify({ error: 'server_error', error_description: 'internal error' }));
      } else res.destroy();
    }
  }

  async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const started = performance.now();
    const policy = deps.policy();
    const id = randomUUID();
    socket.on('error', () => socket.destroy());
    try {
      const { certificate, verdict } = await gather(policy, req, false);
      const { decision, route } = verdict;
      count(route.id, decision);
      if (!decision.allow || deps.draining()) {
        const rendered = decision.allow
          ? { status: 503, headers: { 'content-type': 'text/plain' }, body: 'shutting down\n' }
          : render(policy, decision.error, route);
        socket.end(rawResponse(rendered, { 'x-request-id': id }));
        accessLog({ id, req, status: rendered.status, started, verdict, certificate });
        return;
      }
      prepareForwarding(req, verdict, decision, true, id);
      deps.onUpgraded?.(socket);
      forwarder.ws(req, socket, head, route.upstream, (err) => {
        accessLog({ id, req, status: err.status, started, verdict, certificate, error: err });
        socket.destroy();
      });
      accessLog({ id, req, status: 101, started, verdict, certificate });
    } catch (err) {
      logger.error({ reqId: id, err }, 'upgrade handling failed');
      socket.destroy();
    }
  }

  function handleClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const reason =
      err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT' ? 'request_timeout' : 'http_malformed';
    metrics.requests.inc({ decision: 'deny', reason, route: 'none' });
    logger.info({ reason, code: err.code, peer: (socket as Partial<TLSSocket>).remoteAddress }, 'request refused by the HTTP parser');
    socket.end(rawResponse(renderError(new GuardError(reason), { realm: deps.policy().realm })));
  }

  return {
    onRequest: (req, res) => void handleRequest(req, res),
    onUpgrade: (req, socket, head) => void handleUpgrade(req, socket, head),
    onClientError: handleClientError,
  };
}
