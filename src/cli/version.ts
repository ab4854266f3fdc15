import { UsageError, type Command } from './command.ts';

export async function versionLine(): Promise<string> {
  // src/version.ts reads package.json, as the start-up line and build info do; it loads only node:fs.
  const { NODE_VERSION, VERSION } = await import('../version.ts');
  return `cnfguard ${VERSION} (Node.js ${NODE_VERSION})\n`;
}

export const version: Command = {
  summary: 'print the version and the Node.js version (also --version)',
  usage: `usage: cnfguard version    (or cnfguard --version)

Prints cnfguard's version and the Node.js version it runs on.
`,
  run: async (args) => {
    if (args.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(args[0])}`, 'version');
    process.stdout.write(await versionLine());
    return 0;
  },
};
