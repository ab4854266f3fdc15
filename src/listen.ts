import { chmod, lstat, unlink } from 'node:fs/promises';
import { connect, type AddressInfo, type ListenOptions, type Server } from 'node:net';

/** Which listener this is, for the error when it cannot listen: `the admin listener` at `admin`. */
export interface ListenerName {
  name: string;
  path: string;
}

const WHY: Record<string, string> = {
  EADDRINUSE: 'the address is already in use (another process, or another cnfguard listener)',
  EACCES: 'permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)',
  EADDRNOTAVAIL: 'no interface of this host has that address',
};

const WHY_SOCKET: Record<string, string> = {
  EADDRINUSE: 'another process listens on that socket, or the path is a file that is not a socket (left alone)',
  EACCES: "permission denied: cnfguard's user cannot create files in that directory",
  ENOENT: 'its directory does not exist',
};

/** The listen error, its message naming the listener, its config key and the address; it keeps its `code`. */
function named(err: NodeJS.ErrnoException, what: ListenerName, shown: string, why: Record<string, string>): NodeJS.ErrnoException {
  const code = err.code ?? 'error';
  const error = new Error(`${what.name} (${what.path}) cannot listen on ${shown}: ${code}: ${why[code] ?? err.message}`, { cause: err }) as NodeJS.ErrnoException;
  error.code = err.code;
  return error;
}

/**
 * One listen attempt. No listener of its own stays behind (one did, and swallowed the first
 * runtime error).
 */
function listenOnce(server: Server, options: ListenOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const listening = () => {
      server.off('error', failed);
      resolve();
    };
    const failed = (err: NodeJS.ErrnoException) => {
      server.off('listening', listening);
      reject(err);
    };
    server.once('listening', listening);
    server.once('error', failed);
    server.listen(options);
  });
}

/**
 * Starts listening and resolves with the bound address, or rejects with the listen error
 * (EADDRINUSE…), its message naming the listener, its config key and the address when `what` is
 * given (the error keeps its `code`). From then on every 'error' the server emits (accept failures
 * such as EMFILE) goes to `onError`; without one, such an error is uncaught, as for any server.
 */
export async function listen(server: Server, host: string, port: number, onError?: (err: Error) => void, what?: ListenerName): Promise<AddressInfo> {
  try {
    await listenOnce(server, { host, port });
  } catch (err) {
    throw what === undefined ? err : named(err as NodeJS.ErrnoException, what, host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`, WHY);
  }
  if (onError !== undefined) server.on('error', onError);
  return server.address() as AddressInfo;
}

/** Whether `path` is a Unix socket nobody listens on: what a crashed process leaves behind. */
async function staleSocket(path: string): Promise<boolean> {
  const stat = await lstat(path).catch(() => undefined);
  if (stat?.isSocket() !== true) return false;
  return new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(false);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/**
 * Removes `path` when it is a Unix socket nobody listens on (a crash's leftover), and says whether
 * it did; anything else is left as it is. Under `workers: N` the primary calls it before forking: N
 * workers each finding the same stale file would race to unlink it, one removing the file another
 * had just bound.
 */
export async function removeStaleSocket(path: string): Promise<boolean> {
  if (!(await staleSocket(path))) return false;
  await unlink(path);
  return true;
}

/**
 * Listens on a Unix socket at `path` and sets its permissions to `mode` (who may connect). A
 * socket file nobody listens on (a crash's leftover) is replaced; a live socket or any other file
 * there is an error, and is left as it is. Node removes the file when the server closes.
 */
export async function listenOnSocket(server: Server, path: string, mode: number, onError: (err: Error) => void, what: ListenerName): Promise<void> {
  try {
    await listenOnce(server, { path }).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EADDRINUSE' || !(await removeStaleSocket(path))) throw err;
      await listenOnce(server, { path });
    });
    await chmod(path, mode);
  } catch (err) {
    if (server.listening) await new Promise((resolve) => server.close(resolve));
    throw named(err as NodeJS.ErrnoException, what, path, WHY_SOCKET);
  }
  server.on('error', onError);
}
