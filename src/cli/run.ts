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
  run: async (args) => {
    // A SIGHUP's default action ends the process: one that comes while run's modules load is
    // held, and applied once serving (runProxy takes over the signal as it starts).
    let held = false;
    const hold = () => (held = true);
    process.on('SIGHUP', hold);
    const { runProxy } = await import('./run-proxy.ts');
    process.off('SIGHUP', hold);
    return runProxy(args, held);
  },
};
