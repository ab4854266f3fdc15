import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { contentCodings, decodeForm } from '../../src/pipeline/form-encoding.ts';

const FORM = Buffer.from('a=1&access_token=x');

describe('contentCodings', () => {
  it.each<[string | undefined, string[]]>([
    [undefined, []],
    ['', []],
    ['identity', []],
    ['GZIP', ['gzip']],
    [' gzip , identity, br ', ['gzip', 'br']],
    ['deflate,,gzip', ['deflate', 'gzip']],
  ])('%j -> %j', (header, codings) => {
    expect(contentCodings(header)).toEqual(codings);
  });
});

describe('decodeForm', () => {
  it.each<[string, Buffer]>([
    ['gzip', zlib.gzipSync(FORM)],
    ['x-gzip', zlib.gzipSync(FORM)],
    ['deflate', zlib.deflateSync(FORM)],
    ['deflate', zlib.deflateRawSync(FORM)],
    ['br', zlib.brotliCompressSync(FORM)],
  ])('undoes %s', async (coding, coded) => {
    expect(await decodeForm(coded, [coding], 1024)).toMatchObject({ kind: 'decoded', bytes: FORM });
  });

  it('undoes stacked codings last applied first', async () => {
    const coded = zlib.brotliCompressSync(zlib.gzipSync(FORM));
    expect(await decodeForm(coded, ['gzip', 'br'], 1024)).toMatchObject({ kind: 'decoded', bytes: FORM });
  });

  it('gives what a truncated gzip stream holds, as a lenient decoder would', async () => {
    const long = Buffer.from(`access_token=x&${'b=2&'.repeat(2000)}`);
    const coded = zlib.gzipSync(long);
    const decoded = await decodeForm(coded.subarray(0, coded.length - 20), ['gzip'], 64 * 1024);
    expect(decoded.kind).toBe('decoded');
    expect(decoded.kind === 'decoded' && decoded.bytes.toString().startsWith('access_token=x&')).toBe(true);
  });

  it('stops at the limit of decoded bytes (a zip bomb)', async () => {
    const bomb = zlib.gzipSync(Buffer.alloc(10 * 1024 * 1024));
    expect((await decodeForm(bomb, ['gzip'], 64 * 1024)).kind).toBe('too_large');
    expect((await decodeForm(zlib.gzipSync(bomb), ['gzip', 'gzip'], 64 * 1024)).kind).toBe('too_large');
    expect((await decodeForm(zlib.brotliCompressSync(Buffer.alloc(1024 * 1024)), ['br'], 64 * 1024)).kind).toBe('too_large');
  });

  it('refuses what it cannot undo', async () => {
    expect(await decodeForm(FORM, ['compress'], 1024)).toEqual({ kind: 'unsupported', coding: 'compress' });
    expect(await decodeForm(FORM, ['gzip', 'gzip', 'gzip', 'gzip'], 1024)).toMatchObject({ kind: 'unsupported' });
    expect(await decodeForm(FORM, ['gzip'], 1024)).toEqual({ kind: 'undecodable', coding: 'gzip' });
    expect(await decodeForm(FORM, ['br'], 1024)).toEqual({ kind: 'undecodable', coding: 'br' });
  });
});
