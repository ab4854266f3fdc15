import { CONFIG_USAGE, configPath, type Command } from './command.ts';

export const check: Command = {
  summary: 'validate the config and print it, secrets masked',
  usage: `usage: cnfguard check [--config FILE]

Validates the config and the files it names as \`run\` would, prints the effective config with
secrets masked and exits 0; warnings (an http:// introspection URL, binding off everywhere) go
to stderr. On error, prints every problem with its YAML path and exits 2.

${CONFIG_USAGE}
  -h, --help          this text
`,
  async run(args) {
    const file = configPath('check', args);
    const { ConfigError, effectiveConfigYaml, loadConfigFile, warningsOf } = await import('../config/load.ts');
    try {
      const config = loadConfigFile(file);
      process.stdout.write(effectiveConfigYaml(config));
      for (const w of warningsOf(config)) process.stderr.write(`cnfguard: warning: ${w.path ? `${w.path}: ` : ''}${w.message}\n`);
      return 0;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      process.stderr.write(`cnfguard: ${err.message}\n`);
      return 2;
    }
  },
};
