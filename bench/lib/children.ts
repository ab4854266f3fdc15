/**
 * Benchmark servers run as child processes (Node 24, type stripping), optionally pinned to one CPU
 * with taskset, talking to the orchestrator over IPC: the child sends `{ type: 'ready', ... }`
 * once it listens, and exits when it receives `{ type: 'stop' }` (so `--cpu-prof` gets written).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import { pinnedCommand } from './machine.ts';

export interface ReadyMessage {
  type: 'ready';
  url: string;
  [key: string]: unknown;
}

export interface ChildServer<R extends ReadyMessage = ReadyMessage> {
  name: string;
  pid: number;
  ready: R;
  /** Sends a request over IPC and waits for the answer of the same `type` + 'Result'. */
  call<T>(message: Record<string, unknown> & { type: string }, timeoutMs?: number): Promise<T>;
  stop(timeoutMs?: number): Promise<void>;
  /** False once the process has exited. */
  alive(): boolean;
}

export interface SpawnOptions {
  name: string;
  script: string;
  args?: string[];
  /** Extra Node flags, e.g. --cpu-prof. */
  nodeFlags?: string[];
  /** CPU list for taskset, e.g. `0` or `0-1`. */
  cpu?: string | undefined;
  env?: Record<string, string>;
  /** 'ignore' sends the child's stdout (e.g. its JSON logs) to /dev/null. */
  stdout?: 'ignore' | 'inherit';
  readyTimeoutMs?: number;
}

export async function spawnChild<R extends ReadyMessage = ReadyMessage>(options: SpawnOptions): Promise<ChildServer<R>> {
  const [command, args] = pinnedCommand(options.cpu, process.execPath, [
    '--disable-warning=ExperimentalWarning',
    ...(options.nodeFlags ?? []),
    options.script,
    ...(options.args ?? []),
  ]);
  const child: ChildProcess = spawn(command, args, {
    stdio: ['ignore', options.stdout ?? 'ignore', 'inherit', 'ipc'],
    env: { ...process.env, ...options.env },
  });
  const exited = once(child, 'exit');
  const ready = await new Promise<R>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${options.name}: not ready within ${options.readyTimeoutMs ?? 30_000} ms`));
    }, options.readyTimeoutMs ?? 30_000);
    const onMessage = (message: { type?: string; message?: string }) => {
      if (message.type === 'ready') {
        clearTimeout(timer);
        child.off('message', onMessage);
        resolve(message as R);
      } else if (message.type === 'error') {
        clearTimeout(timer);
        reject(new Error(`${options.name}: ${message.message}`));
      }
    };
    child.on('message', onMessage);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${options.name}: exited before ready (code ${code}, signal ${signal})`));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    name: options.name,
    pid: child.pid as number,
    ready,
    call<T>(message: Record<string, unknown> & { type: string }, timeoutMs = 600_000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          child.off('message', onMessage);
          reject(new Error(`${options.name}: no answer to ${message.type} within ${timeoutMs} ms`));
        }, timeoutMs);
        const onMessage = (answer: { type?: string; message?: string }) => {
          if (answer.type === `${message.type}Result`) {
            clearTimeout(timer);
            child.off('message', onMessage);
            resolve(answer as T);
          } else if (answer.type === 'error') {
            clearTimeout(timer);
            child.off('message', onMessage);
            reject(new Error(`${options.name}: ${answer.message}`));
          }
        };
        child.on('message', onMessage);
        child.send(message);
      });
    },
    alive: () => child.exitCode === null && child.signalCode === null,
    stop(timeoutMs = 15_000) {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        if (child.connected) child.send({ type: 'stop' });
        else child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}

/** For child entry points: listens on a free loopback port and gives it, once listening. */
export async function listenOnLoopback(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return (server.address() as AddressInfo).port;
}

/** For child entry points serving plain HTTP: listens on loopback, announces its URL, and on stop closes every connection. */
export async function serveHttpChild(server: HttpServer): Promise<void> {
  const port = await listenOnLoopback(server);
  serveChild({ url: `http://127.0.0.1:${port}` }, async () => {
    server.closeAllConnections();
    server.close();
  });
}

/** For child entry points: announce readiness, and stop cleanly on `{ type: 'stop' }` or a lost parent. */
export function serveChild(ready: Omit<ReadyMessage, 'type'>, stop: () => Promise<void>, handlers: Record<string, (message: Record<string, unknown>) => Promise<Record<string, unknown>>> = {}): void {
  const send = (message: Record<string, unknown>) => {
    if (process.connected) process.send?.(message);
  };
  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('message', (message: Record<string, unknown> & { type?: string }) => {
    if (message.type === 'stop') {
      shutdown();
      return;
    }
    const handler = message.type === undefined ? undefined : handlers[message.type];
    if (handler === undefined) return;
    handler(message).then(
      (result) => send({ ...result, type: `${message.type}Result` }),
      (err: unknown) => send({ type: 'error', message: err instanceof Error ? err.message : String(err) }),
    );
  });
  process.on('disconnect', shutdown);
  process.on('SIGTERM', shutdown);
  send({ type: 'ready', ...ready });
}

/** For child entry points: report a start-up failure to the parent and exit. */
export function failChild(err: unknown): void {
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`${message}\n`);
  process.exitCode = 1;
  if (process.connected) process.send?.({ type: 'error', message }, () => process.exit(1));
  else process.exit(1);
}
