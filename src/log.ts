/**
 * JSON logs on stdout (pino). Every log call names its fields explicitly: nothing logs a request
 * object, a URL query, a header value or an Authorization value, and tests assert that no token
 * or secret reaches a log line. (pino's redaction would be a second guard against objects we never
 * log, at 3 µs a line: a third of the access log's cost.)
 */
import { constants, fstatSync, openSync } from 'node:fs';
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

/** How long an exiting process keeps retrying a stdout that takes nothing (EAGAIN). */
const EXIT_FLUSH_MS = 500;

/** `limits.logBufferBytes`' default: what log lines may hold in memory while stdout takes nothing. */
export const DEFAULT_LOG_BUFFER_BYTES = 16 * 1024 * 1024;

let droppedLines = 0;
/**
 * Log lines dropped so far by this process because stdout took nothing and the buffer was full
 * (`cnfguard_log_lines_dropped_total`).
 */
export function droppedLogLines(): number {
  return droppedLines;
}

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
  /** Until when a write that gets EAGAIN is retried: always while running, briefly at exit. */
  #retryUntil = Infinity;
  /** Lines dropped since the last warning about it. */
  #droppedSinceWarning = 0;
  /** Said once stdout takes lines again (createLogger's warning). */
  onDropsOver: ((lines: number) => void) | undefined;

  /**
   * maxWrite: what piles up while a write is in flight is written in one go. maxLength: a stdout
   * that takes nothing (a stuck log shipper) must not grow the process until it is killed for its
   * memory while it goes on serving; past `bufferBytes` a batch is dropped and counted.
   */
  constructor(fd: number, bufferBytes: number) {
    this.#out = pino.destination({ fd, sync: false, minLength: BATCH_CHARS, maxWrite: 4 * BATCH_CHARS, maxLength: bufferBytes, retryEAGAIN: () => Date.now() < this.#retryUntil });
    this.#out.on('drop', (data: string) => {
      const lines = linesIn(data);
      droppedLines += lines;
      this.#droppedSinceWarning += lines;
    });
    // A write went through: stdout takes lines again, so say how many were lost meanwhile.
    this.#out.on('write', () => {
      if (this.#droppedSinceWarning === 0) return;
      const lines = this.#droppedSinceWarning;
      this.#droppedSinceWarning = 0;
      // Not from inside sonic-boom's own write callback.
      setImmediate(() => this.onDropsOver?.(lines));
    });
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

  /**
   * The last write, bounded: a stdout whose reader stopped reading (a stuck log shipper, a full
   * pipe) answers EAGAIN for ever, and sonic-boom's synchronous flush retries EAGAIN without end,
   * so an exit would never finish. After EXIT_FLUSH_MS what is left is dropped.
   */
  flushAtExit(): void {
    const out = this.#out;
    this.#retryUntil = Date.now() + EXIT_FLUSH_MS;
    try {
      this.flushSync();
    } catch {
      // A closed, not yet opened or stuck stdout: nothing more can be written. pino's exit flush
      // comes next and would start over; as pino itself does on EPIPE, there is nothing left to flush.
      out.flushSync = () => {};
    }
  }

  /** Resolves true once every line so far is written, false if `timeoutMs` passes first (stdout not taking them). */
  drained(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.flush(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
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

function linesIn(data: string): number {
  let lines = 0;
  for (let at = data.indexOf('\n'); at !== -1; at = data.indexOf('\n', at + 1)) lines++;
  return lines;
}

const batches = new Set<LineBatch>();
// pino flushes its sonic-boom at exit (on-exit-leak-free); lines still in a batch are written here.
// Registered before pino's own exit flush (this module loads first), so a stdout that takes
// nothing is given up here and pino's flush after it finds nothing to wait for.
process.on('exit', () => {
  for (const batch of batches) batch.flushAtExit();
});

/**
 * What the log writes to instead of `fd`, so that a reader that stopped reading (a full pipe) makes
 * writes fail with EAGAIN (retried; bounded at exit) rather than block a libuv thread for ever,
 * which exit waits for. O_NONBLOCK belongs to the open file description, which stdout shares with
 * other processes (the launcher, a cluster's workers), and Node and libuv set and clear it: libuv
 * hands every child blocking stdio, and Node puts back at exit the flags it started with. So:
 * - a pipe (a FIFO: container runtimes, supervisors, `| tee`) is opened again through /proc as this
 *   process's own non-blocking description, which no other process's flags reach;
 * - anything else on stdout (a socket, or no /proc) is made non-blocking the way Node does it, by
 *   creating process.stdout; a cluster primary puts that back after each fork and worker exit
 *   (keepStdoutNonBlocking);
 * - a file or a terminal is written as it is.
 */
function nonBlockingWriter(fd: number): number {
  let stat;
  try {
    stat = fstatSync(fd);
  } catch {
    return fd; // not open: sonic-boom says so at the first write
  }
  if (stat.isFIFO()) {
    try {
      return openSync(`/proc/self/fd/${fd}`, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch {
      // No /proc (or not allowed): as for a socket, below.
    }
  }
  if (fd === 1 && (stat.isFIFO() || stat.isSocket())) void process.stdout;
  return fd;
}

/**
 * The production destination on a file descriptor (stdout for the server; bench/access-line.ts
 * measures it on /dev/null). One write per line cost ~10 µs a request at the default level: lines
 * are batched up to BATCH_CHARS, and flushed at least every FLUSH_INTERVAL_MS (and at exit).
 */
export function batchedDestination(fd: number, bufferBytes = DEFAULT_LOG_BUFFER_BYTES): LineBatch {
  const batched = new LineBatch(nonBlockingWriter(fd), bufferBytes);
  setInterval(() => batched.flush(), FLUSH_INTERVAL_MS).unref();
  return batched;
}

/**
 * Puts O_NONBLOCK back on stdout when the log writes to it as a pipe or socket Node made
 * non-blocking (nonBlockingWriter). A cluster primary calls it after each fork and each worker's
 * exit: libuv hands a child blocking stdio, and a worker's exit puts back the flags it started
 * with, both on the file description the primary writes to too. (A terminal is left as it is.)
 */
export function keepStdoutNonBlocking(): void {
  const stdout = process.stdout as unknown as { _type?: string; _handle?: { setBlocking?: (blocking: boolean) => number } };
  if (stdout._type === 'pipe') stdout._handle?.setBlocking?.(false);
}

/**
 * Waits until every logger's lines so far are written; false if `timeoutMs` passes first. A
 * stopping server waits here, bounded: a stdout nobody reads must not keep it running.
 */
export async function drainLogs(timeoutMs: number): Promise<boolean> {
  const results = await Promise.all([...batches].map((batch) => batch.drained(timeoutMs)));
  return results.every(Boolean);
}

/** `bufferBytes`: what lines may hold in memory while stdout takes nothing (`limits.logBufferBytes`). */
export function createLogger(level: string, destination?: DestinationStream, bufferBytes = DEFAULT_LOG_BUFFER_BYTES): Logger {
  const stdout = destination === undefined ? batchedDestination(1, bufferBytes) : undefined;
  const logger = pino(
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
  if (stdout !== undefined) {
    stdout.onDropsOver = (lines) => logger.warn({ droppedLines: lines, bufferBytes }, 'log lines dropped: stdout took none while the log buffer was full');
  }
  return logger;
}
