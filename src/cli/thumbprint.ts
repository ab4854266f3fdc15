import { readFileSync } from 'node:fs';
import { onePositional, type Command } from './command.ts';

export const thumbprint: Command = {
  summary: "print a certificate's x5t#S256",
  usage: `usage: cnfguard thumbprint FILE.pem

Prints the x5t#S256 (RFC 8705: base64url SHA-256 of the DER, no padding) of the first
certificate in FILE.pem. A file named help: cnfguard thumbprint ./help
`,
  async run(args) {
    const file = onePositional('thumbprint', args, 'one certificate file (PEM)');
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (err) {
      process.stderr.write(`cnfguard: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}\n`);
      return 2;
    }
    const [{ X509Certificate }, { splitPemCertificates, thumbprintS256 }] = await Promise.all([import('node:crypto'), import('../tls/certificates.ts')]);
    const first = splitPemCertificates(pem)[0];
    if (first === undefined) {
      process.stderr.write(`cnfguard: no PEM certificate in ${file}\n`);
      return 2;
    }
    try {
      process.stdout.write(`${thumbprintS256(new X509Certificate(first).raw)}\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`cnfguard: unparseable certificate in ${file}: ${(err as Error).message}\n`);
      return 2;
    }
  },
};
