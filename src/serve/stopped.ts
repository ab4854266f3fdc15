/**
 * How `run` ends once a signal asked it to: the stop bounded, then the process ended whatever
 * still holds its event loop. Both with their waits named here, and their I/O passed in, so that
 * test/unit/stopped.test.ts runs them on fake timers.
 */
import { drainLogs, type Logger } from '../log.ts';

/** How long past its grace period a shutdown may take before the process gives up on it (a cluster primary: on a worker). */
export const STOP_MARGIN_MS = 5_000;
/** How long a stopped process waits for stdout to take its last lines. */
export const LOG_DRAIN_MS = 2_000;
/** How long a stopped process, its lines written, may take to end on its own. */
export const LINGER_MS = 1_000;

type Log = Pick<Logger, 'error' | 'warn'>;

/** What is keeping the event loop alive, by kind (no values: nothing of a request). */
const resources = (): string[] => process.getActiveResourcesInfo();

/**
 * `stop()`'s outcome as an exit code: 0 once it settles, 1 when it fails, and 1 when it is still
 * running STOP_MARGIN_MS after its grace period (the grace period is for requests; a shutdown
 * still not done well after it is stuck).
 */
export function stopWithin(stop: () => Promise<void>, graceMs: number, logger: Log): Promise<number> {
  return new Promise((resolve) => {
    const deadline = setTimeout(() => {
      logger.error({ graceMs, waitingOn: resources() }, 'shutdown did not finish; exiting');
      resolve(1);
    }, graceMs + STOP_MARGIN_MS);
    deadline.unref();
    stop()
      .then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          resolve(1);
        },
      )
      .finally(() => clearTimeout(deadline));
  });
}

/**
 * A stopped server ends, whatever holds its event loop: a stdout nobody reads (its writer retries
 * EAGAIN for ever), a handle something forgot to close. Its lines get LOG_DRAIN_MS to be written;
 * if they are not, it exits at once (what is left is dropped). If they are, the process may end by
 * itself (the usual way: then nothing more runs), else it exits LINGER_MS later naming what kept it.
 */
export async function endOnceStopped(logger: Log, code: number, exit: (code: number) => void, drain: (timeoutMs: number) => Promise<boolean> = drainLogs): Promise<number> {
  if (!(await drain(LOG_DRAIN_MS))) {
    exit(code);
    return code;
  }
  setTimeout(() => {
    logger.warn({ waitingOn: resources() }, 'stopped, but something keeps the process running; exiting');
    exit(code);
  }, LINGER_MS).unref();
  return code;
}
