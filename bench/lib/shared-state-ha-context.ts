/** What parts 4 and 5 of bench/shared-state.ts get from it (shared-state-ha.ts runs them; part 4 is in shared-state-ha-hit.ts). */
import type { AuthorizationServer } from '../../demo/authorization-server.ts';
import type { Pki } from '../../test/fixtures/stack.ts';
import type { ChildServer } from './children.ts';

export interface HaBenchContext {
  pki: Pki;
  as: AuthorizationServer;
  secretFile: string;
  upstreamPid: number;
  pinning: boolean;
  rounds: number;
  seconds: number;
  connections: number;
  /** Which of parts 4 and 5 to run. */
  parts: { cacheHit: boolean; durability: boolean };
  startGuard(name: string, cpu: string | undefined, extra: Record<string, unknown>, nodeFlags?: string[]): Promise<ChildServer>;
}
