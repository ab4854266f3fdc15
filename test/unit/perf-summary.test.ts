/** bench/perf-summary.ts reads `perf script -F pid,ip,sym` output: samples by pid, leaf first, and the coarse part of each. */
import { describe, expect, it } from 'vitest';
import { parsePerfScript, partOf } from '../../bench/perf-summary.ts';

const SCRIPT = `  4242 
\tffffffff81a0 tcp_sendmsg
\tffffffff81b0 ksys_write
\t7f00aa JS:*'end node:_http_outgoing:1143:45
\t7f00bb JS:*handle file:///app/src/edge/decision-api.ts:90:24

  4242 
\t7f00cc Builtins_StringAdd_CheckNone
\t7f00dd JS:*'accessLine file:///app/src/observe/access-log.ts:154:27
\t7f00bb JS:*handle file:///app/src/edge/decision-api.ts:90:24

  77 
\t7f00ee JS:*'lookup file:///app/src/introspection/cache.ts:87:11
`;

describe('perf-summary', () => {
  it('splits samples by pid with their frames, leaf first, addresses dropped', () => {
    const samples = parsePerfScript(SCRIPT);
    expect(samples.map((s) => s.pid)).toEqual([4242, 4242, 77]);
    expect(samples[0]?.frames).toEqual(['tcp_sendmsg', 'ksys_write', "JS:*'end node:_http_outgoing:1143:45", 'JS:*handle file:///app/src/edge/decision-api.ts:90:24']);
  });

  it('names a sample by its first matching frame from the leaf up', () => {
    const [write, line, lookup] = parsePerfScript(SCRIPT);
    expect(partOf(write?.frames ?? [])).toMatch(/^kernel: write/);
    expect(partOf(line?.frames ?? [])).toBe('cnfguard: access line and counts');
    expect(partOf(lookup?.frames ?? [])).toBe('cnfguard: pipeline');
    expect(partOf(['Builtins_LoadIC'])).toMatch(/^other/);
  });
});
