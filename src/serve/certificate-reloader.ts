/**
 * Certificate rotation without a restart: the listener's certificate, key and client CA are read
 * again when their files change (Kubernetes swaps a `..data` symlink in the mounted directory, so
 * the directories are watched, not the files) or on demand (SIGHUP). The new secure context only
 * applies to new connections; open ones keep theirs. A bad set of files keeps the old context, and
 * so does a certificate that has expired or is not valid yet: swapping it in would fail every client
 * that verifies it. One served from the start is only warned about (refusing to start would not
 * help: the files are what there is).
 */
import { X509Certificate, createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import type { Server as HttpsServer } from 'node:https';
import { dirname } from 'node:path';
import type { Settings } from '../config/schema.ts';
import { ConfigError, loadTlsMaterial, type TlsMaterial } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { validityProblem } from '../tls/certificates.ts';
import { secureContextOptions } from './tls-server.ts';

export type ReloadResult = 'success' | 'failure' | 'unchanged';

export interface CertificateReloader {
  /** Reads the files now; swaps the context when they changed and are valid. */
  reload(): ReloadResult;
  /** The certificate currently served. */
  readonly current: TlsMaterial;
  close(): void;
}

export interface ReloaderOptions {
  server: HttpsServer;
  files: Settings['tls'];
  source: string;
  initial: TlsMaterial;
  logger: Logger;
  onResult: (result: ReloadResult, material: TlsMaterial) => void;
  /** Watch the files' directories; off leaves only explicit reloads (SIGHUP). */
  watch?: boolean;
  debounceMs?: number;
  /** The clock a certificate's validity period is judged by (ms since the epoch); default Date.now. */
  now?: () => number;
}

/** What clients that verify the listener's certificate do with one out of its validity period. */
const REFUSED_BY_CLIENTS = 'clients that verify it refuse the connection';

function fingerprint(material: TlsMaterial): string {
  return createHash('sha256').update(material.cert).update('\0').update(material.key).update('\0').update(material.clientCa ?? '').digest('hex');
}

export function notAfterSeconds(material: TlsMaterial): number {
  return Math.floor(new Date(new X509Certificate(material.cert).validTo).getTime() / 1000);
}

export function createCertificateReloader(options: ReloaderOptions): CertificateReloader {
  const { server, files, logger } = options;
  let current = options.initial;
  let currentPrint = fingerprint(current);
  const watchers: FSWatcher[] = [];
  let timer: NodeJS.Timeout | undefined;
  const now = options.now ?? Date.now;

  const initialProblem = validityProblem(new X509Certificate(current.cert), now());
  if (initialProblem !== undefined) {
    const { reason, notBefore, notAfter, message } = initialProblem;
    logger.warn({ path: 'tls.cert', reason, notBefore, notAfter }, `the server certificate ${message}; ${REFUSED_BY_CLIENTS}`);
  }

  function reload(): ReloadResult {
    let next: TlsMaterial;
    try {
      next = loadTlsMaterial(files, options.source);
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [{ path: 'tls', message: (err as Error).message }];
      logger.error({ problems }, 'certificate reload failed; keeping the current certificate');
      options.onResult('failure', current);
      return 'failure';
    }
    const print = fingerprint(next);
    if (print === currentPrint) return 'unchanged';
    const problem = validityProblem(new X509Certificate(next.cert), now());
    if (problem !== undefined) {
      const { reason, notBefore, notAfter, message } = problem;
      logger.error({ problems: [{ path: 'tls.cert', message: `the new certificate ${message}; ${REFUSED_BY_CLIENTS}` }], reason, notBefore, notAfter }, 'certificate reload failed; keeping the current certificate');
      options.onResult('failure', current);
      return 'failure';
    }
    try {
      server.setSecureContext(secureContextOptions(next));
    } catch (err) {
      logger.error({ code: (err as NodeJS.ErrnoException).code }, 'certificate reload rejected by TLS; keeping the current certificate');
      options.onResult('failure', current);
      return 'failure';
    }
    current = next;
    currentPrint = print;
    logger.info({ notAfter: new X509Certificate(next.cert).validTo }, 'certificate reloaded');
    options.onResult('success', current);
    return 'success';
  }

  if (options.watch !== false) {
    const directories = new Set([files.cert, files.key, ...(files.clientCa === undefined ? [] : [files.clientCa])].map((file) => dirname(file)));
    for (const directory of directories) {
      try {
        const watcher = watch(directory, { persistent: false }, () => {
          // Writers replace files in several steps: act once they have settled.
          clearTimeout(timer);
          timer = setTimeout(reload, options.debounceMs ?? 250);
        });
        watcher.on('error', (err) => logger.warn({ directory, code: (err as NodeJS.ErrnoException).code }, 'certificate watch stopped'));
        watchers.push(watcher);
      } catch (err) {
        logger.warn({ directory, code: (err as NodeJS.ErrnoException).code }, 'cannot watch certificate directory; reload with SIGHUP');
      }
    }
  }

  return {
    reload,
    get current() {
      return current;
    },
    close() {
      clearTimeout(timer);
      for (const watcher of watchers) watcher.close();
    },
  };
}
