/** `cnfguard explain`: the command's entry; the pipeline run is in explain-run.ts, loaded only when asked. */
import type { Command } from './command.ts';
import { EXPLAIN_USAGE } from './explain-usage.ts';

export const explain: Command = {
  summary: 'run the pipeline once on a token (live AS) and say why it is allowed or refused',
  usage: EXPLAIN_USAGE,
  run: async (args) => (await import('./explain-run.ts')).explainCommand(args),
};
