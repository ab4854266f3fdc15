import { CONFIG_USAGE, type Command } from './command.ts';

export const run: Command = {
  summary: 'run the proxy',
  usage: `usage: cnfguard run [--config FILE]

Runs the proxy until SIGTERM or SIGINT (a drain; a second signal ends it at once). SIGHUP
reloads the certificates and the config. Logs are JSON lines on stdout.

${CONFIG_USAGE}
  -h, --help          this text
`,
  // All run needs is loaded with it (run-proxy.ts); --help loads only this usage.
  run: async (args) => (await import('./run-proxy.ts')).runProxy(args),
};
