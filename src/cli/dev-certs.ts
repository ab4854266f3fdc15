import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError, type Command } from './command.ts';
import { refuseExisting } from './existing.ts';

/** The files `writeDevCertificates` writes into `dir`. */
export function devCertificateFiles(dir: string, stems: Record<string, string>): string[] {
  return Object.values(stems).flatMap((stem) => [resolve(dir, `${stem}.crt`), resolve(dir, `${stem}.key`)]);
}

/**
 * The refusal of a command whose files cannot be written (a directory in a file's place, a file in
 * a directory's, no permission): one line naming the path and the cause, checked before anything is
 * written, so that a directory in the way is not reported as a file --force would replace.
 */
export async function unwritable(command: string, files: readonly string[]): Promise<string | undefined> {
  const { checkWritable } = await import('../write-files.ts');
  const problem = await checkWritable(files);
  return problem === undefined ? undefined : `${command}: ${problem.message}; nothing was written`;
}

/** Exit 2 with one line for a write that failed all the same (writeFilesTogether wrote nothing); rethrows anything else. */
export async function refuseUnwritten(command: string, err: unknown): Promise<number> {
  const { FileWriteError } = await import('../write-files.ts');
  if (!(err instanceof FileWriteError)) throw err;
  process.stderr.write(`cnfguard: ${command}: ${err.message}; nothing was written\n`);
  return 2;
}

/** Parses --key-mode; node-forge (big) is loaded only by the commands that write certificates. */
export async function keyModeOf(text: string | undefined, command: string): Promise<number | undefined> {
  if (text === undefined) return undefined;
  const { parseKeyMode } = await import('../tls/dev-certs.ts');
  try {
    return parseKeyMode(text);
  } catch (err) {
    throw new UsageError(`--key-mode: ${(err as Error).message}`, command);
  }
}

export const devCerts: Command = {
  summary: 'write a dev CA, a localhost server pair (tls.crt, tls.key) and two client pairs',
  usage: `usage: cnfguard dev-certs DIR [--key-mode MODE] [--force]

Writes into DIR (created if missing) a development CA (ca.crt, ca.key), a server pair for
localhost and 127.0.0.1 (tls.crt, tls.key) and two client pairs (client1, client2), PEM, and
prints the files it wrote. For development only. A directory named help: ./help
Refuses (exit 2, naming them) when any of these files exists, unless --force.

  --key-mode MODE     the private keys' file mode (default 0600); 0644 lets a container running
                      as another uid (the image's 10001) read a bind-mounted directory
  --force             replace existing files (a new CA: certificates issued before stop chaining)
  -h, --help          this text
`,
  async run(args) {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { 'key-mode': { type: 'string' }, force: { type: 'boolean' } } });
    if (positionals.length !== 1 || positionals[0] === undefined) throw new UsageError('expected a directory', 'dev-certs');
    const keyMode = await keyModeOf(values['key-mode'], 'dev-certs');
    const { DEV_CERT_STEMS, writeDevCertificates } = await import('../tls/dev-certs.ts');
    const files = devCertificateFiles(positionals[0], DEV_CERT_STEMS);
    const refused = (await unwritable('dev-certs', files)) ?? refuseExisting('dev-certs', files, values.force === true);
    if (refused !== undefined) {
      process.stderr.write(`cnfguard: ${refused}\n`);
      return 2;
    }
    let written: Record<string, string>;
    try {
      written = await writeDevCertificates(positionals[0], { keyMode });
    } catch (err) {
      return refuseUnwritten('dev-certs', err);
    }
    for (const [name, path] of Object.entries(written)) process.stdout.write(`${name.padEnd(12)} ${path}\n`);
    return 0;
  },
};
