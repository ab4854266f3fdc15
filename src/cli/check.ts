import { CONFIG_USAGE, configPath, type Command } from './command.ts';

/** A listener certificate out of its validity period: `run` serves it all the same, clients that verify it do not take it. */
async function certificateWarnings(certPem: string): Promise<{ path: string; message: string }[]> {
  const [{ X509Certificate }, { validityProblem }] = await Promise.all([import('node:crypto'), import('../tls/certificates.ts')]);
  const problem = validityProblem(new X509Certificate(certPem), Date.now());
  return problem === undefined ? [] : [{ path: 'tls.cert', message: `the certificate ${problem.message}; clients that verify it refuse the connection` }];
}

export const check: Command = {
  summary: 'validate the config and print it, secrets masked',
  usage: `usage: cnfguard check [--config FILE] [--probe]

Validates the config and the files it names as \`run\` would, prints the effective config with
secrets masked and exits 0; warnings (an http:// introspection URL, binding off everywhere, a
server certificate expired or not yet valid) go to stderr. On error, prints every problem with its YAML path and exits 2.

${CONFIG_USAGE}
  --probe             then probe the AS, the JWKS, the shared store and every upstream once, one
                      line each naming cause and fix; exit 1 unless every one answers
  -h, --help          this text
`,
  async run(args) {
    const probe = args.includes('--probe'); // check --probe: probe.ts
    const file = configPath('check', args.filter((arg) => arg !== '--probe'));
    const { ConfigError, effectiveConfigYaml, loadConfigFile, warningsOf } = await import('../config/load.ts');
    try {
      const config = loadConfigFile(file);
      process.stdout.write(effectiveConfigYaml(config));
      for (const w of [...warningsOf(config), ...(await certificateWarnings(config.tls.cert))]) process.stderr.write(`cnfguard: warning: ${w.path ? `${w.path}: ` : ''}${w.message}\n`);
      if (probe) return await (await import('./probe.ts')).runProbe(config, (text) => process.stdout.write(text));
      return 0;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      process.stderr.write(`cnfguard: ${err.message}\n`);
      return 2;
    }
  },
};
