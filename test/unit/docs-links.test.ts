/**
 * Every relative link in README.md and docs/*.md points at a file of the repository, and every
 * `#anchor` on a link to a Markdown page (the same page, `#x`, too) at one of its headings, by
 * GitHub's rule. Anchors were not checked at first, and three went stale unnoticed: a heading
 * moved to another page, another renamed. Pages other branches are writing are listed as COMING:
 * the integrator removes each name from the list once its page is merged.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const COMING = new Set<string>([]);
/**
 * Broken anchors on pages someone else is editing, as `page -> target`: the test says when one of
 * them works again, so the entry goes. docs/security.md: the Paths section is in
 * routes-and-policy.md (the link should be `routes-and-policy.md#paths`).
 */
const KNOWN_BROKEN = new Set<string>([]);
const pages = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

const withoutCode = (text: string) => text.replace(/^```[\s\S]*?^```/gm, '');

/** The anchors GitHub gives a Markdown page: one per heading (repeats get -1, -2, …), and `<a id>`s. */
function anchorsOf(file: string): Set<string> {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const [, heading] of withoutCode(text).matchAll(/^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$/gm)) {
    const plain = (heading as string).replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/<[^>]+>/g, '');
    const slug = plain.toLowerCase().replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '').replace(/\s/g, '-');
    const repeat = seen.get(slug) ?? 0;
    seen.set(slug, repeat + 1);
    anchors.add(repeat === 0 ? slug : `${slug}-${repeat}`);
  }
  for (const [, id] of text.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) anchors.add(id as string);
  return anchors;
}

/** Every link target of `page` that does not resolve, as `page -> target`. */
function brokenLinks(page: string): string[] {
  const broken: string[] = [];
  for (const [, target] of withoutCode(readFileSync(join(ROOT, page), 'utf8')).matchAll(/\]\(([^)\s]+)\)/g)) {
    if (target === undefined || /^(https?:|mailto:)/.test(target)) continue;
    const [path = '', anchor] = target.split('#');
    const file = path === '' ? page : relative(ROOT, resolve(dirname(join(ROOT, page)), path));
    if (COMING.has(file)) continue;
    if (!existsSync(join(ROOT, file))) broken.push(`${page} -> ${target}`);
    else if (anchor !== undefined && file.endsWith('.md') && !anchorsOf(file).has(decodeURIComponent(anchor))) broken.push(`${page} -> ${target}`);
  }
  return broken;
}

it.each(pages)('%s links only to files and headings that exist', (page) => {
  expect(brokenLinks(page).filter((link) => !KNOWN_BROKEN.has(link))).toEqual([]);
});

it.each([...KNOWN_BROKEN])('%s is still broken (fixed: remove it from KNOWN_BROKEN)', (link) => {
  expect(brokenLinks(link.split(' -> ')[0] as string)).toContain(link);
});

it('finds a heading by its GitHub anchor, and a stale one not', () => {
  expect(anchorsOf('bench/README.md').has('what-a-sidecar-costs-issue-32-against-the-commit-before-it')).toBe(true);
  expect(anchorsOf('bench/README.md').has('what-a-sidecar-costs-issue-32')).toBe(false);
});
