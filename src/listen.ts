import type { AddressInfo, Server } from 'node:net';

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

/**
 * Starts listening and resolves with the bound address, or rejects with the listen error
 * (EADDRINUSE…), its message naming the listener, its config key and the address when `what` is
 * given (the error keeps its `code`). No listener of its own stays behind (one did, and swallowed
 * the first runtime error). From then on every 'error' the server emits (accept failures such as
 * EMFILE) goes to `onError`; without one, such an error is uncaught, as for any server.
 */
export async function listen(server: Server, host: string, port: number, onError?: (err: Error) => void, what?: ListenerName): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    const listening = () => {
      server.off('error', failed);
      resolve();
    };
    const failed = (err: NodeJS.ErrnoException) => {
      server.off('listening', listening);
      if (what === undefined) return reject(err);
      const code = err.code ?? 'error';
      const shown = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      const named = new Error(`${what.name} (${what.path}) cannot listen on ${shown}: ${code}: ${WHY[code] ?? err.message}`, { cause: err }) as NodeJS.ErrnoException;
      named.code = err.code;
      reject(named);
    };
    server.once('listening', listening);
    server.once('error', failed);
    server.listen(port, host);
  });
  if (onError !== undefined) server.on('error', onError);
  return server.address() as AddressInfo;
}
