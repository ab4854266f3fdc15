import type { AddressInfo, Server } from 'node:net';

/**
 * Starts listening and resolves with the bound address, or rejects with the listen error
 * (EADDRINUSE…). No listener of its own stays behind (one did, and swallowed the first runtime
 * error). From then on every 'error' the server emits (accept failures such as EMFILE) goes to
 * `onError`; without one, such an error is uncaught, as for any server.
 */
export async function listen(server: Server, host: string, port: number, onError?: (err: Error) => void): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    const listening = () => {
      server.off('error', failed);
      resolve();
    };
    const failed = (err: Error) => {
      server.off('listening', listening);
      reject(err);
    };
    server.once('listening', listening);
    server.once('error', failed);
    server.listen(port, host);
  });
  if (onError !== undefined) server.on('error', onError);
  return server.address() as AddressInfo;
}
