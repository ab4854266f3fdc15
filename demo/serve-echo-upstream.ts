/**
 * The demo's echo upstream (demo/echo-upstream.ts) as a long-running process: a stand-in for your
 * own service while you try cnfguard (`npm run demo:upstream`). It answers every request with
 * JSON describing what it received, the identity headers cnfguard added included.
 *
 *   npm run demo:upstream -- [--host 127.0.0.1] [--port 8080]
 *
 * One JSON line on stdout says where it listens; SIGTERM or SIGINT stops it (exit 0).
 */
import { parseArgs } from 'node:util';
import { startEchoUpstream } from './echo-upstream.ts';

function fail(message: string): number {
  process.stderr.write(`serve-echo-upstream: ${message}\n`);
  return 2;
}

async function main(): Promise<number> {
  let values: { host?: string | undefined; port?: string | undefined };
  try {
    ({ values } = parseArgs({ args: process.argv.slice(2), strict: true, options: { host: { type: 'string' }, port: { type: 'string' } } }));
  } catch (err) {
    return fail((err as Error).message);
  }
  const host = values.host ?? '127.0.0.1';
  const portText = values.port ?? '8080';
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) return fail(`--port: not a port number: ${JSON.stringify(portText)}`);
  let upstream: Awaited<ReturnType<typeof startEchoUpstream>>;
  try {
    upstream = await startEchoUpstream({ host, port: Number(portText) });
  } catch (err) {
    return fail(`cannot listen on ${host}:${portText}: ${(err as Error).message}`);
  }
  // The recorder is for tests; a long-running stand-in forgets what it answered.
  setInterval(() => upstream.requests.splice(0), 10_000).unref();
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), name: 'echo-upstream', msg: 'echo upstream listening', url: upstream.url })}\n`);
  return new Promise<number>((resolve) => {
    const stop = (): void => {
      upstream.stop().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

process.exit(await main());
