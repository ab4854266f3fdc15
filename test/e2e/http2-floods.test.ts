/**
 * HTTP/2 sessions that spend too much are closed (issue 26, findings 3 and 7): past the budget of
 * cancelled streams (rapid reset) or of PING and SETTINGS frames, GOAWAY(ENHANCE_YOUR_CALM);
 * CONTINUATION floods end at nghttp2's own limit. cnfguard runs as `cnfguard run` in a child
 * process, in front of upstreams that hold every request and count the open ones.
 */
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOUND, startChildGuard, type ChildGuard } from '../fixtures/child-guard.ts';
import { FLAG, FRAME, frame, rawConnection, requestBlock, requestBlockFor, type RawConnection } from '../fixtures/h2-frames.ts';

const MAX_STREAMS = 20;
let g: ChildGuard;

beforeAll(async () => {
  g = await startChildGuard(MAX_STREAMS);
});
afterAll(async () => {
  await g?.stop();
});

const raw = () => rawConnection(g.port, g.d.pki.certs.ca.cert, g.d.pki.certs.clients.client1);
/** Whether the server closes `c` within `ms` (a bound, not a wait for nothing: it resolves at the close). */
async function closedWithin(c: RawConnection, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([c.closed.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  clearTimeout(timer);
  return result;
}
const RST_CANCEL = Buffer.from([0, 0, 0, http2.constants.NGHTTP2_CANCEL]);
const open = (id: number, path: string) => frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlockFor(path, { authorization: `Bearer ${BOUND}` }));
const reset = (id: number) => frame(FRAME.RST_STREAM, 0, id, RST_CANCEL);
/** Stream ids 1, 3, 5… for `count` streams. */
const ids = (count: number) => Array.from({ length: count }, (_, i) => 2 * i + 1);

describe('HTTP/2 streams the client resets (CVE-2023-44487)', () => {
  it('past the budget the session gets GOAWAY(ENHANCE_YOUR_CALM) and is closed; another client is served', async () => {
    const c = await raw();
    try {
      c.write(Buffer.concat(ids(3 * MAX_STREAMS).flatMap((id) => [open(id, `/h1/flood/${id}`), reset(id)])));
      expect(await closedWithin(c, 10_000)).toBe(true);
      expect(c.goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    } finally {
      c.destroy();
    }
    await expect.poll(() => g.h1.open(), { timeout: 5000 }).toBe(0);
    expect(await g.status('/h1/fast')).toBe(200);
    expect(g.alive()).toBe(true);
  });
});

describe('HTTP/2 control-frame floods', () => {
  it.each([
    ['SETTINGS', () => frame(FRAME.SETTINGS, 0, 0)],
    ['PING', () => frame(FRAME.PING, 0, 0, Buffer.alloc(8))],
  ])('a %s flood paced so that no ACK queue builds up is cut off by count', async (_name, make) => {
    const c = await raw();
    let sent = 0;
    try {
      // 100 frames, then a pause: nghttp2's queue limit (1000 unsent ACKs) is never reached.
      for (let batch = 0; batch < 200 && !c.isClosed; batch++) {
        c.write(Buffer.concat(Array.from({ length: 100 }, make)));
        sent += 100;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      expect(await closedWithin(c, 10_000)).toBe(true);
      expect(c.goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      expect(sent).toBeLessThan(20_000);
      expect(c.received.acks).toBeLessThan(sent);
    } finally {
      c.destroy();
    }
    expect(await g.status('/h1/fast')).toBe(200);
  });

  it('a CONTINUATION flood ends the session', async () => {
    const c = await raw();
    try {
      // HEADERS without END_HEADERS, then empty CONTINUATION frames that never end the block.
      c.write(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, requestBlock));
      for (let batch = 0; batch < 100 && !c.isClosed; batch++) {
        c.write(Buffer.concat(Array.from({ length: 100 }, () => frame(FRAME.CONTINUATION, 0, 1))));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      expect(await closedWithin(c, 10_000)).toBe(true);
      expect(c.goaway).toBeDefined();
    } finally {
      c.destroy();
    }
    expect(await g.status('/h1/fast')).toBe(200);
    expect(g.alive()).toBe(true);
  });
});
