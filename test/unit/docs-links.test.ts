/**
 * Every relative link in README.md and docs/*.md points at a file of the repository (anchors are
 * not checked). Pages other branches are writing are listed as COMING: the integrator removes
 * each name from the list once its page is merged.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const COMING = new Set<string>([]);
const pages = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

it.each(pages)('%s links only to files that exist', (page) => {
  const text = readFileSync(join(ROOT, page), 'utf8').replace(/^```[\s\S]*?^```/gm, '');
  const broken: string[] = [];
  for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    if (target === undefined || /^(https?:|mailto:|#)/.test(target)) continue;
    const file = relative(ROOT, resolve(dirname(join(ROOT, page)), target.split('#')[0] as string));
    if (!COMING.has(file) && !existsSync(join(ROOT, file))) broken.push(target);
  }
  expect(broken).toEqual([]);
});
