/** cnfguard's version (package.json) and the Node running it: for the start-up line and build info. */
import { readFileSync } from 'node:fs';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
export const NODE_VERSION: string = process.version;
