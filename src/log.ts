/**
 * JSON logs on stdout (pino). Every log call names its fields explicitly: nothing logs a request
 * object, a URL query, a header value or an Authorization value, and tests assert that no token
 * or secret reaches a log line. (pino's redaction would be a second guard against objects we never
 * log, at 3 µs a line: a third of the access log's cost.)
 */
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** How long a log line may wait in the buffer when traffic is low. */
const FLUSH_INTERVAL_MS = 200;

/** pino's number for `warn`: lines at this level or above leave the buffer at once. */
const FLUSH_AT_LEVEL = 40;

/**
 * Lines are handed to the file descriptor's writer in batches of about this many characters
 * (~80 access lines). Each hand-over is an asynchronous write through libuv's threadpool, ~15 µs
 * of CPU however small: 4 KiB batches cost ~2 µs a line, 32 KiB ones ~1 µs. A batch waits at
 * most FLUSH_INTERVAL_MS; warnings and errors flush at once.
 */
const BATCH_CHARS = 32_768;

type SonicBoom = ReturnType<typeof pino.destination>;

/**
 * Lines gathered in one string and handed to pino's asynchronous fd writer (sonic-boom) a batch at
 * a time. sonic-boom alone batches too (`minLength`), but it measures the whole pending chunk
 * with Buffer.byteLength on every line, which flattens the growing string: ~4.5 µs of CPU a line
 * against ~0.4 µs here, at an access line per request. Every line of the logger goes through
 * here, in order; nothing is dropped or sampled.
 */
class LineBatch implements DestinationStream {
  #pending: string[] = [];
  #chars = 0;
  readonly #out: SonicBoom;

  constructor(out: SonicBoom) {
    this.#out = out;
    batches.add(this);
  }

  write(line: string): void {
    this.#pending.push(line);
    this.#chars += line.length;
    if (this.#chars >= BATCH_CHARS) this.#hand();
  }

  /** What pino's `logger.flush(cb)` calls: the batch, then sonic-boom's own buffer. */
  flush(callback?: (err?: Error) => void): void {
    this.#hand();
    this.#out.flush(callback);
  }

  flushSync(): void {
    this.#hand();
    this.#out.flushSync();
  }

  #hand(): void {
    if (this.#pending.length === 0) return;
    // One flat string: lines appended one by one made a rope of thousands of pieces for the native
    // write to walk (the hand-over's share of the server's CPU: 2.9-3.1% as a rope, 1.7-2.5% joined).
    const lines = this.#pending.join('');
    this.#pending = [];
    this.#chars = 0;
    this.#out.write(lines);
  }
}

const batches = new Set<LineBatch>();
// pino flushes its sonic-boom at exit (on-exit-leak-free); lines still in a batch are written here.
process.on('exit', () => {
  for (const batch of batches) {
    try {
      batch.flushSync();
    } catch {
      // A closed or not yet opened stdout: nothing more can be written.
    }
  }
});

/**
 * The production destination on a file descriptor (stdout for the server; bench/access-line.ts
 * measures it on /dev/null). One write per line cost ~10 µs a request at the default level: lines
 * are batched up to BATCH_CHARS, and flushed at least every FLUSH_INTERVAL_MS (and at exit).
 * maxWrite: what piles up while a write is in flight is written in one go.
 */
export function batchedDestination(fd: number): DestinationStream & { flush(): void } {
  const batched = new LineBatch(pino.destination({ fd, sync: false, minLength: BATCH_CHARS, maxWrite: 4 * BATCH_CHARS }));
  setInterval(() => batched.flush(), FLUSH_INTERVAL_MS).unref();
  return batched;
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  const stdout = destination === undefined ? batchedDestination(1) : undefined;
  return pino(
    {
      level,
      base: { service: 'cnfguard', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // `"level":"info"`, not pino's number: what log tools and people search for.
      formatters: { level: (label) => ({ level: label }) },
      // Warnings and errors should not sit up to FLUSH_INTERVAL_MS in the batch: an operator reads
      // them as they happen. (The access log writes to the stream itself and keeps the batching.)
      ...(stdout !== undefined && {
        hooks: {
          logMethod(this: Logger, args: Parameters<Logger['info']>, method: Logger['info'], level: number) {
            method.apply(this, args);
            if (level >= FLUSH_AT_LEVEL) this.flush();
          },
        },
      }),
    },
    destination ?? stdout,
  );
}
