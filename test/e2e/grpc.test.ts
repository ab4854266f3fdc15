/**
 * gRPC through cnfguard (issue 15): a real @grpc/grpc-js client and server, HTTP/2 end to end
 * (h2 to cnfguard, h2c to the upstream). Allowed calls keep their metadata, streams and trailers;
 * refusals are gRPC statuses, not transport errors. Also the HTTP/2 session limits, with Node's
 * http2 client and raw frames; each case is sized so that it fails with Node's default for its option.
 */
import { X509Certificate } from 'node:crypto';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
import { FLAG, FRAME, frame, rawSession, requestBlock } from '../fixtures/h2-frames.ts';
import { startIntrospectionStub, type IntrospectionStub } from '../fixtures/introspection-stub.ts';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

// A service defined without .proto files: messages are JSON in Buffers.
const json = { serialize: (value: unknown) => Buffer.from(JSON.stringify(value)), deserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as Record<string, unknown> };
const SERVICE = {
  echo: { path: '/test.Echo/Echo', requestStream: false, responseStream: false, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize },
  count: { path: '/test.Echo/Count', requestStream: false, responseStream: true, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize },
  chat: { path: '/test.Echo/Chat', requestStream: true, responseStream: true, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize },
} satisfies grpc.ServiceDefinition;

let d: Deployment;
let stub: IntrospectionStub;
let guard: Guard;
let upstream: grpc.Server;
let upstreamPort: number;
const BOUND = 'bound-read';

type Call = grpc.ServerUnaryCall<Record<string, unknown>, Record<string, unknown>>;

beforeAll(async () => {
  d = await startDeployment();
  stub = await startIntrospectionStub(d.pki.certs.server);
  const thumbprint = thumbprintS256(new X509Certificate(d.pki.certs.clients.client1.cert).raw);
  stub.answers.set(BOUND, { active: true, sub: 'alice', client_id: 'app', scope: 'read', exp: Math.floor(Date.now() / 1000) + 600, cnf: { 'x5t#S256': thumbprint } });
  upstream = new grpc.Server();
  upstream.addService(SERVICE, {
    echo: (call: Call, callback: grpc.sendUnaryData<Record<string, unknown>>) => {
      const trailer = new grpc.Metadata();
      trailer.set('x-trailer', 'intact');
      // An error before any message: grpc-js answers trailers-only (one HEADERS frame, END_STREAM).
      if (call.request.fail === true) return callback({ code: grpc.status.NOT_FOUND, details: 'nope from upstream', metadata: trailer });
      callback(null, { ...call.request, subject: call.metadata.get('x-auth-subject')[0], custom: call.metadata.get('x-custom')[0] }, trailer);
    },
    count: (call: grpc.ServerWritableStream<Record<string, unknown>, Record<string, unknown>>) => {
      for (let i = 0; i < Number(call.request.n); i++) call.write({ i });
      call.end();
    },
    chat: (call: grpc.ServerDuplexStream<Record<string, unknown>, Record<string, unknown>>) => {
      call.on('data', (message: Record<string, unknown>) => call.write({ echo: message.text }));
      call.on('end', () => call.end());
    },
  });
  upstreamPort = await new Promise<number>((resolve, reject) => upstream.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
  guard = await startGuard(
    d.pki,
    baseConfig(d.pki, d.as, d.upstream, {
      introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: d.pki.files.ca, timeoutMs: 800 },
      routes: [
        { pathPrefix: '/test.Echo', upstream: `http://127.0.0.1:${upstreamPort}`, upstreamHttp2: true },
        { pathPrefix: '/test.Admin', upstream: `http://127.0.0.1:${upstreamPort}`, upstreamHttp2: true, scopes: ['admin'] },
      ],
      limits: { http2MaxConcurrentStreams: 8, headerBytes: 4096 },
    }),
  );
});
afterAll(async () => {
  await guard?.stop();
  upstream?.forceShutdown();
  await stub?.stop();
  await d?.stop();
});

function client(identity: 'client1' | 'client2' | 'none' = 'client1', path = SERVICE) {
  const pair = identity === 'none' ? undefined : d.pki.certs.clients[identity];
  const credentials = grpc.credentials.createSsl(Buffer.from(d.pki.certs.ca.cert), pair ? Buffer.from(pair.key) : null, pair ? Buffer.from(pair.cert) : null);
  const Client = grpc.makeGenericClientConstructor(path, 'Echo');
  return new Client(`localhost:${guard.started.port}`, credentials) as unknown as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
}

function metadata(token = BOUND): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set('authorization', `Bearer ${token}`);
  m.set('x-custom', 'kept');
  m.set('x-auth-subject', 'forged');
  return m;
}

function unary(c: ReturnType<typeof client>, m: grpc.Metadata, request: Record<string, unknown> = { text: 'hi' }) {
  return new Promise<{ err: grpc.ServiceError | null; value?: Record<string, unknown>; trailers?: grpc.Metadata }>((resolve) => {
    let trailers: grpc.Metadata | undefined;
    const call = (c.echo as (r: unknown, m: grpc.Metadata, cb: (err: grpc.ServiceError | null, value?: Record<string, unknown>) => void) => grpc.ClientUnaryCall)(request, m, (err, value) => {
      setImmediate(() => resolve({ err, value, trailers }));
    });
    call.on('status', (status: grpc.StatusObject) => (trailers = status.metadata));
  });
}

describe('gRPC through cnfguard', () => {
  it('unary: a bound token passes, with metadata, identity and trailers intact', async () => {
    const { err, value, trailers } = await unary(client(), metadata());
    expect(err).toBeNull();
    expect(value).toMatchObject({ text: 'hi', subject: 'alice', custom: 'kept' });
    expect(trailers?.get('x-trailer')).toEqual(['intact']);
  });

  it('an upstream error with no message (trailers-only): its status, message and metadata reach the client', async () => {
    const { err } = await unary(client(), metadata(), { fail: true });
    expect(err?.code).toBe(grpc.status.NOT_FOUND);
    expect(err?.details).toBe('nope from upstream');
    expect(err?.metadata.get('x-trailer')).toEqual(['intact']);
  });

  it('1200 unary calls in sequence on one channel: every one answered, allowed with its trailer, refused as UNAUTHENTICATED (test/e2e/long-connections.test.ts for the other ways in)', async () => {
    const c = client();
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 1200; i++) {
      const allowed = i % 2 === 0;
      const { err, trailers } = await unary(c, allowed ? metadata() : new grpc.Metadata());
      const outcome = allowed ? `${err === null ? 'ok' : err.code} ${trailers?.get('x-trailer')[0] ?? 'no trailer'}` : `${err?.code ?? 'ok'}`;
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    (c as grpc.Client).close();
    expect(Object.fromEntries(outcomes)).toEqual({ 'ok intact': 600, [String(grpc.status.UNAUTHENTICATED)]: 600 });
  });

  it('server streaming and bidirectional streaming pass', async () => {
    const c = client();
    const counted = await new Promise<number[]>((resolve, reject) => {
      const seen: number[] = [];
      const call = (c.count as (r: unknown, m: grpc.Metadata) => grpc.ClientReadableStream<{ i: number }>)({ n: 5 }, metadata());
      call.on('data', (m: { i: number }) => seen.push(m.i));
      call.on('end', () => resolve(seen));
      call.on('error', reject);
    });
    expect(counted).toEqual([0, 1, 2, 3, 4]);
    const echoed = await new Promise<string[]>((resolve, reject) => {
      const seen: string[] = [];
      const call = (c.chat as (m: grpc.Metadata) => grpc.ClientDuplexStream<{ text: string }, { echo: string }>)(metadata());
      call.on('data', (m: { echo: string }) => {
        seen.push(m.echo);
        if (seen.length < 3) call.write({ text: `m${seen.length}` });
        else call.end();
      });
      call.on('end', () => resolve(seen));
      call.on('error', reject);
      call.write({ text: 'm0' });
    });
    expect(echoed).toEqual(['m0', 'm1', 'm2']);
  });

  it('another certificate: UNAUTHENTICATED (16) with the Bearer challenge', async () => {
    const { err } = await unary(client('client2'), metadata());
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(String(err?.metadata.get('www-authenticate')[0])).toContain('error="invalid_token"');
  });

  it('missing scope: PERMISSION_DENIED (7)', async () => {
    const admin = { echo: { ...SERVICE.echo, path: '/test.Admin/Echo' } };
    const { err } = await unary(client('client1', admin as unknown as typeof SERVICE), metadata());
    expect(err?.code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it('the AS down: UNAVAILABLE (14)', async () => {
    // While up, the stub answers an unknown token as inactive: UNAUTHENTICATED.
    expect((await unary(client(), metadata('never-seen'))).err?.code).toBe(grpc.status.UNAUTHENTICATED);
    await stub.stop();
    const { err } = await unary(client(), metadata('another-unseen'));
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
  });
});

describe('HTTP/2 session limits', () => {
  const connect = () =>
    http2.connect(guard.started.url, { ca: d.pki.certs.ca.cert, ...d.pki.certs.clients.client1, servername: 'localhost' });

  it('advertises the concurrent-stream limit', async () => {
    const session = connect();
    await new Promise((resolve) => session.once('remoteSettings', resolve));
    expect(session.remoteSettings.maxConcurrentStreams).toBe(8);
    session.destroy();
  });

  it('answers a header list over headerBytes 431, before and after the client acknowledged the SETTINGS; resets one over twice the limit', async () => {
    const session = connect();
    session.on('error', () => {});
    const big = (bytes = 6000) => session.request({ ':path': '/x', 'x-big': 'a'.repeat(bytes) });
    const outcome = (stream: http2.ClientHttp2Stream) =>
      new Promise<string>((resolve) => {
        stream.on('response', (h) => resolve(String(h[':status'])));
        stream.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        stream.on('close', () => resolve(`closed:${stream.rstCode}`));
      });
    // Sent at once: nghttp2 does not apply SETTINGS_MAX_HEADER_LIST_SIZE before the ACK; the pipeline does.
    expect(await outcome(big())).toBe('431');
    // After a round trip the client has acknowledged the SETTINGS (twice headerBytes): still the pipeline's 431, as over HTTP/1.1.
    await new Promise((resolve) => session.ping(resolve));
    expect(await outcome(big())).toBe('431');
    // Past twice the limit, nghttp2 resets the stream itself: the hard bound on a stream's headers.
    expect(await outcome(big(9000))).toBe('ERR_HTTP2_STREAM_ERROR');
    session.destroy();
  });

  const raw = (frames: (write: (b: Buffer) => void) => void, waitMs: number) => rawSession(guard.started.port, d.pki.certs.ca.cert, d.pki.certs.clients.client1, frames, waitMs);
  const stillServed = async () => {
    const fresh = connect();
    const status = await new Promise((resolve) => {
      const stream = fresh.request({ ':path': '/after' });
      stream.on('response', (h) => resolve(h[':status']));
      stream.on('error', () => resolve('error'));
    });
    fresh.destroy();
    return status;
  };

  it('a rapid-reset flood (CVE-2023-44487) gets GOAWAY, and other clients are still served', async () => {
    // 500 streams opened and reset at once: past cnfguard's reset burst (200), within nghttp2's default (1000).
    const outcome = await raw((write) => {
      const burst: Buffer[] = [];
      for (let i = 0; i < 500; i++) {
        const id = 2 * i + 1;
        burst.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlock), frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])));
      }
      write(Buffer.concat(burst));
    }, 3000);
    expect(outcome.goaway !== undefined || outcome.closed).toBe(true);
    expect(await stillServed()).toBe(401);
  });

  it('a PING flood and a SETTINGS flood end the session; other clients are still served', async () => {
    // nghttp2 ends a session whose peer makes it queue over 1000 ACKs (Node has no option for it).
    const pings = await raw((write) => write(Buffer.concat(Array.from({ length: 20_000 }, () => frame(FRAME.PING, 0, 0, Buffer.alloc(8))))), 3000);
    expect(pings.goaway !== undefined || pings.closed).toBe(true);
    const settings = await raw((write) => write(Buffer.concat(Array.from({ length: 20_000 }, () => frame(FRAME.SETTINGS, 0, 0)))), 3000);
    expect(settings.goaway !== undefined || settings.closed).toBe(true);
    expect(await stillServed()).toBe(401);
  });

  it('an empty-DATA-frame flood ends the session', async () => {
    // 500 empty DATA frames: past maxSessionInvalidFrames (100), within Node's default (1000).
    const empty = await raw((write) => {
      write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, requestBlock));
      write(Buffer.concat(Array.from({ length: 500 }, () => frame(FRAME.DATA, 0, 1))));
    }, 3000);
    expect(empty.goaway !== undefined || empty.closed).toBe(true);
    expect(await stillServed()).toBe(401);
  });
});

