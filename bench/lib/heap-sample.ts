/**
 * What survives young-generation GC: V8's sampling heap profiler, run in-process over a window of
 * load, reporting sampled objects that no scavenge collected (still live, or collected only by a
 * mark-compact). Those objects are what makes scavenges slow (they are copied) and what fills the
 * old generation (they are promoted), so mark-compacts follow.
 */
import { Session } from 'node:inspector/promises';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

interface SamplingNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: SamplingNode[];
}

export interface HeapSite {
  /** Allocating function, then its callers (up to 4). */
  stack: string;
  kb: number;
  pct: number;
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function frameName(frame: SamplingNode['callFrame']): string {
  let where = frame.url;
  if (where.startsWith('file://')) where = fileURLToPath(where);
  const nm = where.lastIndexOf('/node_modules/');
  if (nm !== -1) where = where.slice(nm + '/node_modules/'.length);
  else if (where.startsWith(ROOT)) where = relative(ROOT, where);
  return `${frame.functionName || '(anonymous)'}${where ? ` ${where}:${frame.lineNumber + 1}` : ''}`;
}

export async function sampleHeap(seconds: number, top = 25): Promise<{ totalKb: number; sites: HeapSite[] }> {
  const session = new Session();
  session.connect();
  try {
    await session.post('HeapProfiler.enable');
    // Objects a major GC collected are kept in the report, those a scavenge collected are not: what
    // is left is what outlived young-generation GC (promoted), live or garbage.
    await session.post('HeapProfiler.startSampling', {
      samplingInterval: 8192,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: false,
    } as Parameters<Session['post']>[1] & object);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    const { profile } = (await session.post('HeapProfiler.stopSampling')) as { profile: { head: SamplingNode } };
    const sites = new Map<string, number>();
    let total = 0;
    const walk = (node: SamplingNode, stack: string[]) => {
      const here = [frameName(node.callFrame), ...stack].slice(0, 5);
      if (node.selfSize > 0) {
        const key = here.join('  <  ');
        sites.set(key, (sites.get(key) ?? 0) + node.selfSize);
        total += node.selfSize;
      }
      for (const child of node.children) walk(child, here);
    };
    walk(profile.head, []);
    return {
      totalKb: Math.round(total / 1024),
      sites: [...sites.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, top)
        .map(([stack, bytes]) => ({ stack, kb: Math.round(bytes / 1024), pct: Math.round((bytes / total) * 1000) / 10 })),
    };
  } finally {
    session.disconnect();
  }
}
