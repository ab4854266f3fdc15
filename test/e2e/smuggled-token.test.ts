/**
 * A second token never reaches the upstream in the query or a form body (RFC 6750 §2.2/§2.3, the
 * contract's 400 `invalid_request` row), in any spelling the upstream's own parser reads as
 * `access_token`. The upstream is Express 5 with its default parsers (body-parser's urlencoded,
 * which inflates gzip, deflate and br; qs for the query, as `query parser: extended`), the client
 * sends raw bytes over TLS with a certificate-bound token from the real AS. Each spelling is
 * first sent to Express directly, to show that Express does read a token from it.
 */
import { once } from 'node:events';
import http2 from 'node:http2';
import type { Server } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import zlib from 'node:zlib';
import express, { type Request, type Response } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, startDeployment, startGuard, type Deployment, type Guard } from '../fixtures/stack.ts';

let d: Deployment;
let guard: Guard;
let server: Server;
let expressUrl: string;
let token: string;
/** What Express handed the application, by request path. */
const readByExpress = new Map<string, { body: Record<string, unknown>; query: Record<string, unknown> }>();

beforeAll(async () => {
  d = await startDeployment();
  const app = express();
  app.set('query parser', 'extended');
  const record = (req: Request, res: Response): void => {
    readByExpress.set(req.path, { body: (req.body ?? {}) as Record<string, unknown>, query: req.query as Record<string, unknown> });
    res.json({ ok: true });
  };
  app.use('/extended', express.urlencoded({ extended: true }), record);
  app.use('/simple', express.urlencoded({ extended: false }), record);
  server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  expressUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  guard = await startGuard(d.pki, baseConfig(d.pki, d.as, d.upstream, { listen: { host: '127.0.0.1', port: 0, http2: true }, upstream: expressUrl, binding: 'required' }));
  token = await d.tokenFor('client1');
});
afterAll(async () => {
  await guard?.stop();
  await new Promise((resolve) => server?.close(resolve));
  await d?.stop();
});

interface Sent {
  status: number;
  text: string;
}

function request(path: string, body: Buffer | undefined, headers: Record<string, string> = {}): Buffer {
  const lines = [`${body === undefined ? 'GET' : 'POST'} ${path} HTTP/1.1`, 'Host: api.example', `Authorization: Bearer ${token}`, 'Connection: close'];
  if (body !== undefined) lines.push('Content-Type: application/x-www-form-urlencoded', `Content-Length: ${body.length}`);
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), body ?? Buffer.alloc(0)]);
}

async function collect(socket: net.Socket, bytes: Buffer): Promise<Sent> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => {});
  socket.write(bytes);
  await once(socket, 'close');
  const text = Buffer.concat(chunks).toString('latin1');
  return { status: Number(text.split(' ')[1]), text };
}

/** Through cnfguard, over TLS with client1's certificate. */
async function viaGuard(path: string, body?: Buffer, headers?: Record<string, string>): Promise<Sent> {
  const socket = tls.connect({ host: '127.0.0.1', port: guard.started.port, ca: d.pki.certs.ca.cert, servername: 'localhost', ...d.pki.certs.clients.client1 });
  await once(socket, 'secureConnect');
  return collect(socket, request(path, body, headers));
}

/** Straight to Express, as an attacker would wish cnfguard did not stand in between. */
async function direct(path: string, body?: Buffer, headers?: Record<string, string>): Promise<Sent> {
  const socket = net.connect(Number(new URL(expressUrl).port), '127.0.0.1');
  await once(socket, 'connect');
  return collect(socket, request(path, body, headers));
}

let n = 0;
const fresh = (prefix: string) => `${prefix}/${++n}`;
const tokenOf = (read: Record<string, unknown> | undefined): unknown => read?.access_token;

const BODY_NAMES = ['[access_token]', '%5Baccess_token%5D', 'access_token[]', 'access_token[0]', 'access_token%5B%5D', 'access%5Ftoken', '[access_token]x', 'access_token[=]'];
/** The spellings `express.urlencoded({ extended: false })` reads as `access_token` too. */
const READ_BY_SIMPLE = new Set(['[access_token]', '%5Baccess_token%5D', 'access%5Ftoken']);

describe('a token in a form body, in the spellings Express reads', () => {
  it.each(BODY_NAMES)('%s=STOLEN: Express reads req.body.access_token from it directly; through cnfguard 400, Express never sees it', async (name) => {
    const body = Buffer.from(`a=1&${name}=STOLEN`);
    for (const parser of ['/extended', '/simple']) {
      expect((await direct(fresh(parser), body)).status).toBe(200);
      // qs reads `[x]` as `x` even with extended: false (depth 0); the nesting forms only when extended.
      if (parser === '/extended' || READ_BY_SIMPLE.has(name)) expect(tokenOf(readByExpress.get(`/${n}`)?.body), `${parser} ${name}`).toBeDefined();
      const { status, text } = await viaGuard(fresh(parser), body);
      expect(status, name).toBe(400);
      expect(text).toContain('"error":"invalid_request"');
      expect(readByExpress.has(`/${n}`), name).toBe(false);
    }
  });

  it.each(['gzip', 'deflate', 'br'])('in a %s-coded form body: 400, while Express inflates it to req.body.access_token', async (coding) => {
    // Long enough that brotli compresses the name too (a short input is stored as it is).
    const plain = Buffer.from('a=1&b=2&c=3&note=hello+world&access_token=STOLEN&d=4');
    const coded = coding === 'gzip' ? zlib.gzipSync(plain) : coding === 'deflate' ? zlib.deflateSync(plain) : zlib.brotliCompressSync(plain);
    expect((await direct(fresh('/extended'), coded, { 'Content-Encoding': coding })).status).toBe(200);
    expect(tokenOf(readByExpress.get(`/${n}`)?.body)).toBe('STOLEN');
    const { status, text } = await viaGuard(fresh('/extended'), coded, { 'Content-Encoding': coding });
    expect(status).toBe(400);
    expect(text).toContain('access tokens are not accepted in the request body');
    expect(readByExpress.has(`/${n}`)).toBe(false);
  });

  it('a bracketed name inside a gzip body is found too', async () => {
    const coded = zlib.gzipSync(Buffer.from('%5Baccess_token%5D=STOLEN'));
    expect((await viaGuard(fresh('/extended'), coded, { 'Content-Encoding': 'GZIP' })).status).toBe(400);
    expect(readByExpress.has(`/${n}`)).toBe(false);
  });

  it('over HTTP/2 alike: a gzip body with a token is 400, one without is forwarded', async () => {
    const session = http2.connect(`https://127.0.0.1:${guard.started.port}`, { ca: d.pki.certs.ca.cert, servername: 'localhost', ...d.pki.certs.clients.client1 });
    try {
      const post = async (path: string, form: string): Promise<number> => {
        const stream = session.request({ ':method': 'POST', ':path': path, ':authority': 'api.example', authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded', 'content-encoding': 'gzip' });
        stream.end(zlib.gzipSync(Buffer.from(form)));
        const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
        stream.resume();
        await once(stream, 'end');
        return Number(headers[':status']);
      };
      expect(await post(fresh('/extended'), 'a=1&%5Baccess_token%5D=STOLEN')).toBe(400);
      expect(readByExpress.has(`/${n}`)).toBe(false);
      expect(await post(fresh('/extended'), 'a=1')).toBe(200);
      expect(readByExpress.get(`/${n}`)?.body).toEqual({ a: '1' });
    } finally {
      session.close();
    }
  });

  it('a gzip form body without a token is forwarded as sent, and Express reads it', async () => {
    const coded = zlib.gzipSync(Buffer.from('a=1&b=two'));
    expect((await viaGuard(fresh('/extended'), coded, { 'Content-Encoding': 'gzip' })).status).toBe(200);
    expect(readByExpress.get(`/${n}`)?.body).toEqual({ a: '1', b: 'two' });
  });

  it('a gzip bomb stops at limits.formBodyBytes of decoded output: 413', async () => {
    const bomb = zlib.gzipSync(Buffer.concat([Buffer.from('a='), Buffer.alloc(8 * 1024 * 1024, 'x'), Buffer.from('&access_token=STOLEN')]));
    expect(bomb.length).toBeLessThan(64 * 1024);
    const { status, text } = await viaGuard(fresh('/extended'), bomb, { 'Content-Encoding': 'gzip' });
    expect(status).toBe(413);
    expect(text).toContain('form body too large to inspect');
    expect(readByExpress.has(`/${n}`)).toBe(false);
  });

  it.each<[string, Record<string, string>, Buffer]>([
    ['a coding cnfguard does not undo', { 'Content-Encoding': 'compress' }, Buffer.from('access_token=STOLEN')],
    ['a body that does not decode', { 'Content-Encoding': 'gzip' }, Buffer.from('access_token=STOLEN')],
    ['too many codings', { 'Content-Encoding': 'gzip, gzip, gzip, gzip' }, Buffer.from('x')],
  ])('%s: 415 form_body_encoding, nothing forwarded', async (_name, headers, body) => {
    const { status, text } = await viaGuard(fresh('/extended'), body, headers);
    expect(status).toBe(415);
    expect(text).toContain('"error":"invalid_request"');
    expect(readByExpress.has(`/${n}`)).toBe(false);
    expect(guard.logs.text()).toContain('form_body_encoding');
  });
});

const QUERY_NAMES = ['[access_token]', '%5Baccess_token%5D', 'access_token[]', 'access_token[0]', 'access_token%5B0%5D', 'access.token', 'access+token', 'access%20token', 'access%5Ftoken', 'Access_Token', '.access_token'];

describe('a token in the query, in the spellings qs and PHP read', () => {
  it.each(QUERY_NAMES)('?%s=STOLEN: 400, never forwarded', async (name) => {
    const { status, text } = await viaGuard(`${fresh('/extended')}?a=1&${name}=STOLEN`);
    expect(status, name).toBe(400);
    expect(text).toContain('access tokens are not accepted in the URL');
    expect(readByExpress.has(`/${n}`)).toBe(false);
  });

  it('qs does read a token from the bracketed spellings (so refusing them is no over-caution)', async () => {
    for (const name of ['[access_token]', '%5Baccess_token%5D', 'access_token[0]']) {
      expect((await direct(`${fresh('/extended')}?${name}=STOLEN`)).status).toBe(200);
      expect(readByExpress.get(`/${n}`)?.query.access_token, name).toBeDefined();
    }
  });

  it('names that only contain the word pass', async () => {
    expect((await viaGuard(`${fresh('/extended')}?my_access_token=1&user%5Baccess_token%5D=2&access_tokens=3`)).status).toBe(200);
  });
});
