/**
 * Benchmark child (run with --expose-gc): memory of cnfguard's token cache. The app is built by
 * createApp from a YAML file like production, but with an injected `introspect` that answers every
 * token with a realistic, distinct introspection answer (parsed from JSON text by the real
 * `tokenInfoFromAnswer`), so 100k+ tokens need no authorization server. The cache is filled through
 * the app's public `tokens.lookup`, in batches, with RSS and heap taken after a full GC at checkpoints.
 *
 * IPC `fill` { tokens, checkpoints: number[], settleSeconds?, slowFill? } -> { baseline, checkpoints: [...], settled? }
 */
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { createApp } from '../../src/app.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { tokenInfoFromAnswer } from '../../src/introspection/token-info.ts';
import { failChild, serveChild } from '../lib/children.ts';

export interface MemoryPoint {
  tokens: number;
  cacheSize: number;
  rssMb: number;
  heapUsedMb: number;
  /** V8 heap reserved (used + free pages it keeps). */
  heapTotalMb: number;
  /** Memory outside the V8 heap that V8 knows of (Buffers, ...). */
  externalMb: number;
}

const gc = (globalThis as { gc?: () => void }).gc;

function measure(tokens: number, cacheSize: number): MemoryPoint {
  for (let i = 0; i < 3; i++) gc?.();
  const usage = process.memoryUsage();
  const mb = (n: number) => round1(n / 2 ** 20);
  return { tokens, cacheSize, rssMb: mb(usage.rss), heapUsedMb: mb(usage.heapUsed), heapTotalMb: mb(usage.heapTotal), externalMb: mb(usage.external) };
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

try {
  if (gc === undefined) throw new Error('memory.ts needs --expose-gc');
  const file = process.argv[2];
  if (file === undefined) throw new Error('usage: memory.ts CONFIG.yaml');
  const thumbprint = randomBytes(32).toString('base64url');
  let serial = 0;
  // What oidc-provider answers for a certificate-bound client-credentials token, one per token.
  const introspect = async (_token: string) => {
    serial += 1;
    const now = Math.floor(Date.now() / 1000);
    const text = JSON.stringify({
      active: true,
      client_id: 'app',
      exp: now + 3600,
      iat: now,
      iss: 'https://127.0.0.1:8443',
      scope: 'read write',
      token_type: 'Bearer',
      aud: 'https://rs.cnfguard.test/',
      jti: `${serial.toString(36)}${randomBytes(16).toString('base64url')}`,
      cnf: { 'x5t#S256': thumbprint },
    });
    return tokenInfoFromAnswer(JSON.parse(text));
  };
  const app = createApp(loadConfigFile(file, process.env), { logger: pino({ level: 'warn' }), introspect, defaultMetrics: false });
  const started = await app.start();
  serveChild({ url: started.url }, () => app.stop(200), {
    async fill(message) {
      const total = Number(message.tokens);
      const checkpoints = new Set((message.checkpoints as number[]) ?? []);
      const baseline = measure(0, app.tokens.size);
      const points: MemoryPoint[] = [];
      const batch = 1000;
      const slowFill = message.slowFill === true;
      for (let done = 0; done < total; ) {
        const size = Math.min(batch, total - done);
        const lookups: Promise<unknown>[] = [];
        // 32 random bytes in base64url: the length of oidc-provider's opaque access tokens.
        for (let i = 0; i < size; i++) lookups.push(app.tokens.lookup(randomBytes(32).toString('base64url')));
        await Promise.all(lookups);
        done += size;
        // A slow fill (the usual case: tokens arrive with traffic) lets GC keep up with the garbage
        // each introspection leaves; a burst fill leaves V8 holding the pages it grew into.
        if (slowFill) gc?.();
        if (checkpoints.has(done) || done === total) points.push(measure(done, app.tokens.size));
      }
      // Then idle: V8 gives committed-but-unused heap pages back only over time (memory reducer).
      const settleSeconds = Number(message.settleSeconds ?? 0);
      let settled: MemoryPoint | undefined;
      if (settleSeconds > 0) {
        await new Promise((resolve) => setTimeout(resolve, settleSeconds * 1000));
        settled = measure(total, app.tokens.size);
      }
      return { baseline, checkpoints: points, ...(settled !== undefined && { settled, settleSeconds }) };
    },
  });
} catch (err) {
  failChild(err);
}
