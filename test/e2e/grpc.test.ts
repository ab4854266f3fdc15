/**
 * gRPC through cnfguard (issue 15): a real @grpc/grpc-js client and server, HTTP/2 end to end
 * (h2 to cnfguard, h2c to the upstream). Allowed calls keep their metadata, streams and trailers;
 * refusals are gRPC statuses, not transport errors. Also the HTTP/2 session limits, with raw frames
 * from Node's http2 client.
 */
import { X509Certificate } from 'node:crypto';
import http2 from 'node:http2';
import { once } from 'node:events';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thumbprintS256 } from '../../src/tls/certificates.ts';
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

  it('advertises the concurrent-stream limit and refuses streams past it', async () => {
    const session = connect();
    await new Promise((resolve) => session.once('remoteSettings', resolve));
    expect(session.remoteSettings.maxConcurrentStreams).toBe(8);
    session.destroy();
  });

  it('refuses a header list over headerBytes', async () => {
    const session = connect();
    session.on('error', () => {});
    const stream = session.request({ ':path': '/x', 'x-big': 'a'.repeat(8000) });
    const outcome = await new Promise<string>((resolve) => {
      stream.on('response', (h) => resolve(String(h[':status'])));
      stream.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      stream.on('close', () => resolve(`closed:${stream.rstCode}`));
    });
    expect(outcome).not.toBe('200');
    session.destroy();
  });

  /** One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload. */
  const frame = (type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)) => {
    const head = Buffer.alloc(9);
    head.writeUIntBE(payload.length, 0, 3);
    head[3] = type;
    head[4] = flags;
    head.writeUInt32BE(streamId, 5);
    return Buffer.concat([head, payload]);
  };
  // HPACK, static table only: :method GET, :scheme https, :path /, then :authority localhost.
  const requestBlock = Buffer.concat([Buffer.from([0x82, 0x87, 0x84, 0x41, 9]), Buffer.from('localhost')]);

  async function rawSession(frames: (write: (b: Buffer) => void) => void, waitMs: number): Promise<{ goaway: boolean; closed: boolean }> {
    const socket = tls.connect({ host: '127.0.0.1', port: guard.started.port, ca: d.pki.certs.ca.cert, servername: 'localhost', ALPNProtocols: ['h2'], ...d.pki.certs.clients.client1 });
    socket.on('error', () => {});
    await once(socket, 'secureConnect');
    let goaway = false;
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 9) {
        const length = buffered.readUIntBE(0, 3);
        if (buffered.length < 9 + length) break;
        if (buffered[3] === 0x7) goaway = true;
        buffered = buffered.subarray(9 + length);
      }
    });
    const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(true)));
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(0x4, 0, 0)]));
    frames((b) => socket.write(b));
    const result = await Promise.race([closed, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), waitMs))]);
    socket.destroy();
    return { goaway, closed: result };
  }

  it('a rapid-reset flood (CVE-2023-44487) gets GOAWAY, and other clients are still served', async () => {
    const outcome = await rawSession((write) => {
      const burst: Buffer[] = [];
      for (let i = 0; i < 3000; i++) {
        const id = 2 * i + 1;
        burst.push(frame(0x1, 0x4 | 0x1, id, requestBlock), frame(0x3, 0, id, Buffer.from([0, 0, 0, 8])));
      }
      write(Buffer.concat(burst));
    }, 3000);
    expect(outcome.goaway || outcome.closed).toBe(true);
    const fresh = connect();
    const status = await new Promise((resolve) => {
      const stream = fresh.request({ ':path': '/after' });
      stream.on('response', (h) => resolve(h[':status']));
      stream.on('error', () => resolve('error'));
    });
    expect(status).toBe(401);
    fresh.destroy();
  });

  it('a PING flood and an empty-DATA-frame flood end the session', async () => {
    const pings = await rawSession((write) => write(Buffer.concat(Array.from({ length: 20_000 }, () => frame(0x6, 0, 0, Buffer.alloc(8))))), 3000);
    expect(pings.goaway || pings.closed).toBe(true);
    const empty = await rawSession((write) => {
      write(frame(0x1, 0x4, 1, requestBlock));
      write(Buffer.concat(Array.from({ length: 5000 }, () => frame(0x0, 0, 1))));
    }, 3000);
    expect(empty.goaway || empty.closed).toBe(true);
  });
});

