import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { installFatalHandlers } from '../../src/fatal.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A logger batching like production's (async, 4 KiB), writing to a file the test reads. */
function batchedFileLogger() {
  const dir = mkdtempSync(join(tmpdir(), 'cnfguard-fatal-'));
  dirs.push(dir);
  const file = join(dir, 'log.jsonl');
  const logger = pino({ level: 'info' }, pino.destination({ dest: file, sync: false, minLength: 4096, mkdir: true }));
  const lines = () =>
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, lines };
}

async function opened(logger: pino.Logger): Promise<void> {
  const stream = (logger as unknown as Record<symbol, EventEmitter & { fd: number }>)[pino.symbols.streamSym];
  if (stream !== undefined && stream.fd < 0) await new Promise((resolve) => stream.once('ready', resolve));
}

it.each([
  ['uncaughtException', new Error('boom')],
  ['unhandledRejection', new Error('nobody awaited this')],
] as const)('%s: the batched lines and one fatal line are on disk before exit(1)', async (event, error) => {
  const { logger, lines } = batchedFileLogger();
  await opened(logger);
  const events = new EventEmitter();
  const exits: number[] = [];
  installFatalHandlers(logger, (code) => exits.push(code), events as unknown as NodeJS.Process);
  logger.info('before');
  events.emit(event, error, Promise.resolve());
  events.emit(event, new Error('a second one while exiting'), Promise.resolve());
  // Read synchronously: nothing may wait for a later tick.
  const written = lines();
  expect(written.map((l) => l.msg)).toEqual(['before', `${event}: ${error.message}; exiting`]);
  expect(written[1]).toMatchObject({ level: 60, event, err: { message: error.message, type: 'Error' } });
  expect(exits).toEqual([1]);
});

it('a rejection with a non-error reason is logged by its text', async () => {
  const { logger, lines } = batchedFileLogger();
  await opened(logger);
  const events = new EventEmitter();
  installFatalHandlers(logger, () => {}, events as unknown as NodeJS.Process);
  events.emit('unhandledRejection', 'just a string', Promise.resolve());
  expect(lines()[0]?.msg).toBe('unhandledRejection: non-error unhandledRejection: just a string; exiting');
});

it('in a real process with the real logger: a throw in a timer ends it with exit 1 and one fatal JSON line on stdout', () => {
  const script = `
    import { createLogger } from './src/log.ts';
    import { installFatalHandlers } from './src/fatal.ts';
    const logger = createLogger('info');
    installFatalHandlers(logger, (code) => process.exit(code));
    logger.info('serving');
    setTimeout(() => { throw new Error('bug in a callback'); }, 10);
    setInterval(() => {}, 1000); // something that would keep it alive
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 10_000 });
  expect(r.status).toBe(1);
  const lines = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(lines.map((l) => [l.level, l.msg])).toEqual([
    ['info', 'serving'],
    ['fatal', 'uncaughtException: bug in a callback; exiting'],
  ]);
  expect(r.stderr).toBe('');
});
