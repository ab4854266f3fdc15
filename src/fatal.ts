/**
 * The last line of a process that hit a bug: an exception nobody caught or a promise rejection
 * nobody handled leaves the process in an unknown state, so it logs one fatal line and exits 1
 * (a supervisor or the cluster primary starts a fresh one).
 */
import type { Logger } from './log.ts';

type FatalEvents = Pick<NodeJS.Process, 'on'>;

/** From now on an uncaught exception or unhandled rejection logs one fatal line, then `exit(1)`. */
export function installFatalHandlers(logger: Logger, exit: (code: number) => void, events: FatalEvents = process): void {
  let exiting = false;
  const die = (what: 'uncaughtException' | 'unhandledRejection', reason: unknown) => {
    // One line even if something fails again on the way out.
    if (exiting) return;
    exiting = true;
    const err = reason instanceof Error ? reason : new Error(`non-error ${what}: ${String(reason)}`);
    // pino's fatal() writes its batched stream out synchronously, so the line survives exit().
    logger.fatal({ err, event: what }, `${what}: ${err.message}; exiting`);
    exit(1);
  };
  events.on('uncaughtException', (err) => die('uncaughtException', err));
  events.on('unhandledRejection', (reason) => die('unhandledRejection', reason));
}
