/**
 * nginx as an mTLS-terminating reverse proxy, the upper baseline: one worker process (pinned with
 * the master to the server CPU), a client certificate requested but not verified (like cnfguard
 * without tls.clientCa), its SHA-1 fingerprint passed upstream, keep-alive to the same upstream,
 * no access log. Used only when an nginx binary is found.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { freePort } from '../../test/fixtures/processes.ts';
import { childPids, pinnedCommand } from './machine.ts';

export { freePort };

const CANDIDATES = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx', '/usr/local/bin/nginx', '/usr/local/nginx/sbin/nginx'];

export function findNginx(): string | undefined {
  const fromEnv = process.env.NGINX_BIN;
  if (fromEnv !== undefined && fromEnv !== '') return existsSync(fromEnv) ? fromEnv : undefined;
  const found = CANDIDATES.find((path) => existsSync(path));
  if (found !== undefined) return found;
  try {
    const which = execFileSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8', timeout: 5000 }).trim();
    return which === '' ? undefined : which;
  } catch {
    return undefined;
  }
}

export function nginxVersion(bin: string): string {
  // nginx prints its version on stderr.
  const { stdout, stderr } = spawnSync(bin, ['-v'], { encoding: 'utf8', timeout: 5000 });
  return `${stdout ?? ''}${stderr ?? ''}`.trim().replace(/^nginx version: /, '') || 'unknown';
}


export interface NginxServer {
  url: string;
  version: string;
  pids(): number[];
  alive(): boolean;
  stop(): Promise<void>;
}

export interface StartNginxOptions {
  bin: string;
  dir: string;
  cert: string;
  key: string;
  upstream: string;
  cpu: string | undefined;
  workers?: number;
  /**
   * Instead of the reverse proxy: these http-level blocks (upstreams, maps, a server listening on
   * 127.0.0.1:`port`), e.g. the decision API recipe. Client keep-alive is then set at http level,
   * as the reverse proxy sets it, so that server inherits it.
   */
  http?: (port: number) => string;
}

export async function startNginx(options: StartNginxOptions): Promise<NginxServer> {
  const dir = options.dir;
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const conf = `# written by bench/lib/nginx.ts
worker_processes ${options.workers ?? 1};
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
${process.getuid?.() === 0 ? 'user root root;' : ''}
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${options.http === undefined ? reverseProxy(port, options) : `  ssl_session_tickets on;\n  keepalive_timeout 60s;\n  keepalive_requests 10000000;\n${options.http(port)}`}
}
`;
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  const [command, args] = pinnedCommand(options.cpu, options.bin, ['-p', dir, '-c', file, '-e', join(dir, 'error.log')]);
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = once(child, 'exit');
  // Should the orchestrator die, nginx (which has no IPC channel to notice) goes with it.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  void exited.then(() => process.off('exit', reap));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited with code ${child.exitCode}; see ${dir}/error.log`);
    if (await canConnect(port)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`nginx did not listen on ${port} within 10 s; see ${dir}/error.log`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const master = child.pid as number;
  return {
    url: `https://127.0.0.1:${port}`,
    version: nginxVersion(options.bin),
    pids: () => [master, ...childPids(master)],
    alive: () => child.exitCode === null && child.signalCode === null,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The upper baseline: mTLS terminated, everything proxied to the upstream, nothing checked. */
function reverseProxy(port: number, options: StartNginxOptions): string {
  const upstream = new URL(options.upstream);
  return `  upstream app {
    server ${upstream.hostname}:${upstream.port};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${options.cert};
    ssl_certificate_key ${options.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_verify_client optional_no_ca;
    ssl_session_tickets on;
    keepalive_timeout 60s;
    keepalive_requests 10000000;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Client-Cert-Fingerprint $ssl_client_fingerprint;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
    }
  }`;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('secureConnect', () => done(true));
    socket.once('error', () => done(false));
  });
}
