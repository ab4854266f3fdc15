/**
 * Attackers beside the soak's legitimate traffic (issue 10): connections that never start TLS,
 * form bodies trickled a byte at a time, and uploads abandoned half-way. Each kind is bounded in
 * count, runs until stopped, and reports what the server did to it.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface AttackerOptions {
  port: number;
  ca: string;
  client: { cert: string; key: string };
  /** A valid token for `client`: the uploads pass the checks, are forwarded, then abandoned. */
  token: () => string;
  silentSockets?: number;
  slowForms?: number;
  abortedUploadsPerSecond?: number;
}

export interface AttackerStats {
  /** Silent TCP connections opened, and those the server closed (handshake timeout). */
  silentOpened: number;
  silentClosedByServer: number;
  /** Slow form posts started, and those answered before their body was complete. */
  slowFormsStarted: number;
  slowFormsAnsweredEarly: number;
  abortedUploads: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function startAttackers(options: AttackerOptions): { stop(): Promise<AttackerStats> } {
  const stats: AttackerStats = { silentOpened: 0, silentClosedByServer: 0, slowFormsStarted: 0, slowFormsAnsweredEarly: 0, abortedUploads: 0 };
  let running = true;
  const open = new Set<net.Socket>();
  const track = <T extends net.Socket>(socket: T): T => {
    open.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => open.delete(socket));
    return socket;
  };

  async function silent(): Promise<void> {
    while (running) {
      stats.silentOpened++;
      const socket = track(net.connect(options.port, '127.0.0.1'));
      await new Promise((resolve) => socket.once('close', resolve));
      if (running) stats.silentClosedByServer++;
    }
  }

  const connectTls = () => track(tls.connect({ host: '127.0.0.1', port: options.port, ca: options.ca, servername: 'localhost', ...options.client }));

  async function slowForm(): Promise<void> {
    while (running) {
      stats.slowFormsStarted++;
      const socket = connectTls();
      let answered = false;
      socket.once('data', () => (answered = true));
      socket.once('secureConnect', () =>
        socket.write(`POST /soak/slow-form HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer junk${Math.random().toString(36).slice(2)}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\n`),
      );
      for (let i = 0; i < 20 && running && !socket.destroyed && !answered; i++) {
        await sleep(250);
        if (!socket.destroyed) socket.write('a');
      }
      if (answered) stats.slowFormsAnsweredEarly++;
      socket.destroy();
    }
  }

  async function abortedUploads(perSecond: number): Promise<void> {
    while (running) {
      await sleep(1000 / perSecond);
      const socket = connectTls();
      socket.once('secureConnect', () => {
        socket.write(`POST /soak/valid_client1/abandoned-upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${options.token()}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(2000)}`);
        setTimeout(() => socket.destroy(), 50);
      });
      stats.abortedUploads++;
    }
  }

  const tasks = [
    ...Array.from({ length: options.silentSockets ?? 40 }, silent),
    ...Array.from({ length: options.slowForms ?? 10 }, slowForm),
    abortedUploads(options.abortedUploadsPerSecond ?? 10),
  ];
  return {
    async stop() {
      running = false;
      for (const socket of open) socket.destroy();
      await Promise.allSettled(tasks);
      return stats;
    },
  };
}
