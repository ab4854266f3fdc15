/**
 * The production logger (createLogger without a destination) batches lines before its
 * asynchronous stdout writer: every line must still come out, in order, however the process ends.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';

const LOG = join(import.meta.dirname, '..', '..', 'src', 'log.ts');

/** Runs `body` in a fresh Node with `logger` = createLogger('info'); returns the messages it printed. */
function messagesOf(body: string): string[] {
  const script = `import { createLogger } from ${JSON.stringify(LOG)};\nconst logger = createLogger('info');\n${body}`;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  expect(run.stderr).toBe('');
  return run.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => (JSON.parse(line) as { msg: string }).msg);
}

it('lines still in the batch are written when the process exits at once', () => {
  expect(messagesOf(`for (let i = 0; i < 5; i++) logger.info('line ' + i);\nprocess.exit(0);`)).toEqual(['line 0', 'line 1', 'line 2', 'line 3', 'line 4']);
});

it('lines still in the batch are written when the process ends by itself', () => {
  expect(messagesOf(`logger.info('only line');`)).toEqual(['only line']);
});

it('a warning leaves after the lines before it, and thousands of lines (several batches) all come out in order', () => {
  const messages = messagesOf(`logger.info('first');\nlogger.warn('warning');\nfor (let i = 0; i < 3000; i++) logger.info('n' + i);\nlogger.error('last');`);
  expect(messages.slice(0, 2)).toEqual(['first', 'warning']);
  expect(messages.slice(2, -1)).toEqual(Array.from({ length: 3000 }, (_, i) => `n${i}`));
  expect(messages.at(-1)).toBe('last');
});
