/** `sharedState.url | sentinel | cluster` (exactly one), the password files, and what `check` says. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { effectiveConfigYaml } from '../../src/config/effective.ts';
import { readSharedStateFiles, resolveFilePaths } from '../../src/config/files.ts';
import { configSchema } from '../../src/config/schema.ts';
import { redisTargetOf } from '../../src/compose/shared-state.ts';
import { minimalConfig, minimalSettings } from '../fixtures/config.ts';

const SECRET = '/s/secret';
const sentinel = { masterName: 'cnfguard', nodes: ['10.0.0.1:26379', '10.0.0.2:26379', '[fd00::3]:26379'] };
const cluster = { nodes: ['10.0.0.1:6379', '10.0.0.2:6379'] };

function problemsOf(sharedState: Record<string, unknown>): string[] {
  const parsed = configSchema.safeParse(minimalConfig({ sharedState }));
  return parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('sharedState topology', () => {
  it('takes exactly one of url, sentinel and cluster, and says which when it is not one', () => {
    expect(problemsOf({ url: 'redis://127.0.0.1:6379/0', secretFile: SECRET })).toEqual([]);
    expect(problemsOf({ sentinel, secretFile: SECRET })).toEqual([]);
    expect(problemsOf({ cluster, secretFile: SECRET })).toEqual([]);
    expect(problemsOf({ secretFile: SECRET })).toEqual(['sharedState: one of url, sentinel or cluster is required']);
    expect(problemsOf({ url: 'redis://h:1', sentinel, secretFile: SECRET })).toEqual(['sharedState: exactly one of url, sentinel or cluster: this config sets url and sentinel']);
    expect(problemsOf({ sentinel, cluster, secretFile: SECRET })).toEqual(['sharedState: exactly one of url, sentinel or cluster: this config sets sentinel and cluster']);
  });

  it('refuses nodes that are not host:port, and an unknown durability', () => {
    expect(problemsOf({ sentinel: { masterName: 'm', nodes: ['10.0.0.1'] }, secretFile: SECRET })[0]).toMatch(/^sharedState\.sentinel\.nodes\.0: host:port/);
    expect(problemsOf({ cluster: { nodes: ['h:70000'] }, secretFile: SECRET })[0]).toMatch(/^sharedState\.cluster\.nodes\.0: a port/);
    expect(problemsOf({ cluster: { nodes: [] }, secretFile: SECRET })[0]).toMatch(/^sharedState\.cluster\.nodes/);
    expect(problemsOf({ cluster, secretFile: SECRET, replayDurability: 'quorum' })[0]).toMatch(/^sharedState\.replayDurability/);
  });

  it('defaults replayDurability to primary; each topology becomes its ioredis target', () => {
    const settings = minimalSettings({ sharedState: { sentinel, secretFile: SECRET } });
    expect(settings.sharedState?.replayDurability).toBe('primary');
    expect(redisTargetOf(settings.sharedState!, { sentinelPassword: 'pw' })).toEqual({
      kind: 'sentinel',
      masterName: 'cnfguard',
      nodes: [{ host: '10.0.0.1', port: 26379 }, { host: '10.0.0.2', port: 26379 }, { host: 'fd00::3', port: 26379 }],
      sentinelPassword: 'pw',
    });
    expect(redisTargetOf(minimalSettings({ sharedState: { cluster, secretFile: SECRET } }).sharedState!, {})).toEqual({ kind: 'cluster', nodes: [{ host: '10.0.0.1', port: 6379 }, { host: '10.0.0.2', port: 6379 }] });
  });

  it('check says which store is used, above YAML that still parses to the same settings', () => {
    const settings = minimalSettings({ sharedState: { sentinel, secretFile: SECRET, replayDurability: 'replica' } });
    const text = effectiveConfigYaml({ settings });
    expect(text.split('\n')[0]).toBe('# sharedState uses sentinel: primary "cnfguard" as told by 3 sentinel(s) (10.0.0.1:26379, 10.0.0.2:26379, [fd00::3]:26379); replayDurability replica');
    expect(effectiveConfigYaml({ settings: minimalSettings({ sharedState: { cluster, secretFile: SECRET } }) }).split('\n')[0]).toMatch(/^# sharedState uses cluster: 2 seed node\(s\)/);
    expect(effectiveConfigYaml({ settings: minimalSettings({ sharedState: { url: 'redis://:pw@h:6379/0', secretFile: SECRET } }) })).toMatch(/^# sharedState uses url: one node[^]*url: redis:\/\/:\*{8}@h:6379\/0/);
    expect(effectiveConfigYaml({ settings: minimalSettings() })).not.toContain('sharedState');
  });

  it('reads both password files, relative to the config file, without their line end; an empty one is a problem', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cnfguard-shared-'));
    writeFileSync(join(dir, 'secret'), Buffer.alloc(32, 1));
    writeFileSync(join(dir, 'redis-pw'), 'data-pw\n');
    writeFileSync(join(dir, 'sentinel-pw'), 'sentinel-pw');
    writeFileSync(join(dir, 'empty'), '');
    const raw = { sharedState: { sentinel: { ...sentinel, passwordFile: 'sentinel-pw' }, passwordFile: 'redis-pw', secretFile: 'secret' } };
    const copy = { sharedState: { ...raw.sharedState } };
    const warnings: never[] = [];
    resolveFilePaths(copy, dir, warnings, '/');
    expect(raw.sharedState.sentinel.passwordFile, 'the raw config is not written').toBe('sentinel-pw');
    const settings = minimalSettings(copy);
    const problems: { path: string; message: string }[] = [];
    const material = readSharedStateFiles(settings, problems);
    expect(problems).toEqual([]);
    expect(material?.password).toBe('data-pw');
    expect(material?.sentinelPassword).toBe('sentinel-pw');
    readSharedStateFiles(minimalSettings({ sharedState: { cluster, secretFile: join(dir, 'secret'), passwordFile: join(dir, 'empty') } }), problems);
    expect(problems.map((p) => p.path)).toEqual(['sharedState.passwordFile']);
  });
});
