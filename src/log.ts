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

export function createLogger(level: string, destination?: DestinationStream): Logger {
  let stdout: DestinationStream | undefined;
  if (destination === undefined) {
    // One write per line cost ~10 µs a request at the default level: lines are batched up to
    // 4 KiB, and flushed at least every FLUSH_INTERVAL_MS (and at exit, by pino).
    const batched = pino.destination({ fd: 1, sync: false, minLength: 4096 });
    setInterval(() => batched.flush(), FLUSH_INTERVAL_MS).unref();
    stdout = batched;
  }
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
