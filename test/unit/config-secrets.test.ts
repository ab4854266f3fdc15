import { describe, expect, it } from 'vitest';
import { isSecretPath, maskedLine, maskUrlPasswords, withoutUrlPassword } from '../../src/config/secrets.ts';

describe('what a config shows of its secrets', () => {
  it.each([
    ['introspection.clientSecret', true],
    ['sharedState.password', true],
    ['tracing.headers.x-api-key', true],
    ['tracing.headers.authorization', true],
    ['introspection.clientId', false],
    ['assertion.keyFile', false],
    ['routes[0].pathPrefix', false],
  ])('%s is secret: %s', (path, secret) => {
    expect(isSecretPath(path)).toBe(secret);
  });

  it.each([
    ['  clientSecret: @Gen3ratedS3cret%%', '  clientSecret: ********'],
    ['  "clientSecret": "x"', '  "clientSecret": ********'],
    ['  url: https://user:UrlPw42@as.example/introspect', '  url: https://user:********@as.example/introspect'],
    ['  url: redis://:pw@redis:6379', '  url: redis://:********@redis:6379'],
    ['  clientId: rs', '  clientId: rs'],
    ['  upstream: http://127.0.0.1:8080/path', '  upstream: http://127.0.0.1:8080/path'],
  ])('the line %j is shown as %j', (line, shown) => {
    expect(maskedLine(line)).toBe(shown);
  });

  it('masks the password of a URL anywhere in a settings object, and nothing else', () => {
    const settings = { upstream: 'http://bob:UpPw31@127.0.0.1:1/', routes: [{ upstream: 'http://127.0.0.1:2' }], mail: 'a@b', nested: { url: 'https://user@as.example/' } };
    expect(maskUrlPasswords(settings)).toEqual({ upstream: 'http://bob:********@127.0.0.1:1/', routes: [{ upstream: 'http://127.0.0.1:2' }], mail: 'a@b', nested: { url: 'https://user@as.example/' } });
    expect(withoutUrlPassword('not a url @ all')).toBe('not a url @ all');
  });
});
