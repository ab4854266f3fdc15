import { UsageError, type Command } from './command.ts';

export const schema: Command = {
  summary: "print the config's JSON Schema (draft 2020-12), for editors",
  usage: `usage: cnfguard schema

Prints the JSON Schema (draft 2020-12) of cnfguard.yaml, the file docs/cnfguard.schema.json
holds. With the YAML language server (VS Code's YAML extension and others), a first line
  # yaml-language-server: $schema=PATH/TO/cnfguard.schema.json
gives completion, descriptions and checks while editing.
`,
  async run(args) {
    if (args.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(args[0])}`, 'schema');
    const { configJsonSchemaText } = await import('../config/json-schema.ts');
    process.stdout.write(configJsonSchemaText());
    return 0;
  },
};
