/**
 * `sharedState`: the store every replica shares (Redis or Valkey), one node (`url`), a Sentinel
 * deployment (`sentinel`) or a Redis Cluster (`cluster`): exactly one of the three.
 */
import * as z from 'zod';
import { number, urlProblem, type FieldSchemas } from './schema-fields.ts';

export const SHARED_STATE_TOPOLOGIES = ['url', 'sentinel', 'cluster'] as const;
export type SharedStateTopology = (typeof SHARED_STATE_TOPOLOGIES)[number];

/** Shared state across replicas (Redis or Valkey), built for each config schema (schema.ts buildConfigSchema). */
export function buildSharedStateSchema({ filePath }: Pick<FieldSchemas, 'filePath'>) {
  /** `host:port`, as Redis and Sentinel configs write a node (IPv6 in brackets: `[::1]:26379`). */
  const node = z
    .string()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/, 'host:port, e.g. 10.0.0.1:26379 or [fd00::1]:26379')
    .refine((value) => Number(value.slice(value.lastIndexOf(':') + 1)) <= 65535, 'a port from 0 to 65535');

  return z
    .strictObject({
      url: z
        .url({ protocol: /^rediss?$/, error: (issue) => urlProblem(issue.input, 'a redis:// or rediss:// URL') })
        .optional()
        .describe('One Redis or Valkey server (redis:// or rediss://). Instead of sentinel or cluster.'),
      sentinel: z
        .strictObject({
          masterName: z.string().min(1).describe('The name the sentinels monitor the primary under (`sentinel monitor <name> ...`).'),
          nodes: z.array(node).min(1).describe('The sentinels, as host:port; any one that answers tells where the primary is, and a failover is followed without a restart.'),
          passwordFile: filePath.optional().describe('A file holding the password of the sentinels themselves (`requirepass` on the sentinels); the data nodes use sharedState.passwordFile.'),
        })
        .optional()
        .describe('Redis Sentinel (Valkey too): the primary is asked of these sentinels and followed through failovers. Instead of url or cluster.'),
      cluster: z
        .strictObject({
          nodes: z.array(node).min(1).describe('Some nodes of the cluster, as host:port; the rest, and which node holds which hash slot, are learnt from them.'),
        })
        .optional()
        .describe('Redis Cluster: keys spread over the hash slots of several primaries. Instead of url or sentinel.'),
      passwordFile: filePath.optional().describe('A file holding the password of the data nodes (`requirepass`), for sentinel and cluster; with url it may instead be in the URL (redis://:password@host).'),
      replayDurability: z
        .enum(['primary', 'replica'])
        .default('primary')
        .describe(
          'When a replay-store write (a DPoP jti, a signature nonce) counts as stored: `primary` once the primary took it; `replica` once a replica also acknowledged it (WAIT 1, bounded by timeoutMs), so that a failover cannot forget it. A write no replica acknowledged in time follows onUnavailable.',
        ),
      keyPrefix: z.string().default('cnfguard:').describe('Prefix of every key cnfguard writes.'),
      secretFile: filePath.describe(
        'A file of at least 32 bytes that authenticates entries (read at start-up), read as bytes: a trailing newline counts. The same bytes on every replica; replicas that differ (even by a newline) share nothing, and say so (secret_mismatch).',
      ),
      onUnavailable: z
        .enum(['fail-closed', 'local'])
        .default('fail-closed')
        .describe('With the store down, proof-of-possession requests are refused (fail-closed) or checked against per-process state (local).'),
      ca: filePath.optional().describe("PEM CA for rediss:// (default: the system's trust)."),
      timeoutMs: number(z.number().int().positive().max(60_000)).default(200).describe('Per-call deadline for the store; a slower store counts as a miss. At most introspection.timeoutMs: a larger value is lowered to it (logged at start).'),
    })
    .superRefine((value, ctx) => {
      const given = SHARED_STATE_TOPOLOGIES.filter((key) => value[key] !== undefined);
      if (given.length === 1) return;
      ctx.addIssue({
        code: 'custom',
        message: given.length === 0 ? 'one of url, sentinel or cluster is required' : `exactly one of url, sentinel or cluster: this config sets ${given.join(' and ')}`,
      });
    });
}

export type SharedStateSettings = z.output<ReturnType<typeof buildSharedStateSchema>>;

/** Which of url, sentinel and cluster a valid `sharedState` uses. */
export function sharedStateTopology(shared: SharedStateSettings): SharedStateTopology {
  return shared.sentinel !== undefined ? 'sentinel' : shared.cluster !== undefined ? 'cluster' : 'url';
}

/** One line for `cnfguard check`: which store the replicas will share. */
export function describeSharedState(shared: SharedStateSettings): string {
  if (shared.sentinel !== undefined) return `sentinel: primary "${shared.sentinel.masterName}" as told by ${shared.sentinel.nodes.length} sentinel(s) (${shared.sentinel.nodes.join(', ')}); replayDurability ${shared.replayDurability}`;
  if (shared.cluster !== undefined) return `cluster: ${shared.cluster.nodes.length} seed node(s) (${shared.cluster.nodes.join(', ')}); replayDurability ${shared.replayDurability}`;
  return `url: one node; replayDurability ${shared.replayDurability}`;
}

/** `host:port` as ioredis takes a node. */
export function hostPort(value: string): { host: string; port: number } {
  const colon = value.lastIndexOf(':');
  const host = value.slice(0, colon);
  return { host: host.startsWith('[') ? host.slice(1, -1) : host, port: Number(value.slice(colon + 1)) };
}
