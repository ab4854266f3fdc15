/**
 * Header values that must carry any text: code points a caller refuses are written as their
 * UTF-8 bytes, each escaped. Used for the identity headers (percent-encoding) and the XFCC element
 * (RFC 4514 `\XX` in Subject, percent-encoding in URI and DNS).
 */

/**
 * The bytes of one code point, UTF-8; a lone surrogate (a JSON `\uD800` escape can carry one, no
 * valid UTF-8 text can) gets its WTF-8 bytes (`ED A0 80`…`ED BF BF`), which no other code point has.
 */
function utf8Bytes(cp: number): number[] {
  if (cp < 0x80) return [cp];
  if (cp < 0x800) return [0xc0 | (cp >> 6), 0x80 | (cp & 0x3f)];
  if (cp < 0x10000) return [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  return [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
}

const hex2 = (byte: number): string => byte.toString(16).toUpperCase().padStart(2, '0');

/**
 * `value` with every code point that `keep` refuses written as its (WTF-8) bytes, each as
 * `escape` + two upper-case hex digits. Nothing is dropped; `keep` must refuse `escape` itself.
 */
export function escapeBytes(value: string, escape: '%' | '\\', keep: (cp: number, first: boolean, last: boolean) => boolean): string {
  let out = '';
  let at = 0;
  for (const ch of value) {
    const cp = ch.codePointAt(0) ?? 0;
    if (keep(cp, at === 0, at + ch.length === value.length)) out += ch;
    else for (const byte of utf8Bytes(cp)) out += escape + hex2(byte);
    at += ch.length;
  }
  return out;
}
