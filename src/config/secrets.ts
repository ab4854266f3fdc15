/**
 * What counts as secret in a config, in one place: a value at a secret key is never shown (in a
 * config problem, a log line, `check` or /config), nor a password in a URL's userinfo. Problems
 * are logged (a rejected reload, a failed start), so they must not carry what they are about.
 */

export const MASK = '********';

/** Keys that hold credentials: client secrets, passwords, tokens, API keys, authorization values. */
const SECRET_KEY = /secret|passw(or)?d|token|authorization|api[-_]?key|credential/i;

/**
 * Whether the value at `path` (as formatPath writes it) is a secret: a secret-named key, or any
 * export header of `tracing.headers` (they carry a collector's credentials under any name).
 */
export function isSecretPath(path: string): boolean {
  if (/^tracing\.headers(\.|\[|$)/.test(path)) return true;
  const last = /([A-Za-z0-9_-]+)\]?$/.exec(path)?.[1] ?? '';
  return SECRET_KEY.test(last);
}

/** `https://user:pass@host/` with the password masked; anything else as it is. */
export function withoutUrlPassword(value: string): string {
  if (!value.includes('@')) return value;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return value;
  }
  if (url.password === '') return value;
  url.password = MASK;
  return url.toString();
}

/**
 * A line of the config file shown beside a YAML error, with what may be secret masked: the value
 * of a secret-named key, and a password in any URL's userinfo.
 */
export function maskedLine(line: string): string {
  return line
    .replace(/(["']?)([A-Za-z0-9_-]+)\1(\s*:\s*)(\S.*)$/, (whole, quote: string, key: string, colon: string) => (SECRET_KEY.test(key) ? `${quote}${key}${quote}${colon}${MASK}` : whole))
    .replace(/(\/\/[^\s/:@]*:)[^\s@/]+@/g, `$1${MASK}@`);
}

/** Every URL in a config object with its userinfo password masked (in place; the object is a copy). */
export function maskUrlPasswords(value: unknown): unknown {
  if (typeof value === 'string') return withoutUrlPassword(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = maskUrlPasswords(value[i]);
  } else if (value !== null && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) (value as Record<string, unknown>)[key] = maskUrlPasswords(child);
  }
  return value;
}
