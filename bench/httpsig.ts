// node bench/httpsig.ts: HTTP Message Signatures (issue 30) beside DPoP and mTLS.
//
// 1. One signature check (httpsig.ts: both dictionaries parsed, the profile's rules, the signature
//    base, the key from the token's cnf.jwk, crypto.verify, the nonce in the replay store) against
//    a bare crypto.verify of the same Ed25519 signature over the same base with an imported key.
//    Goal: within 1.3x (issue 30).
// 2. Through cnfguard in its own process at token cache hit, 32 keep-alive connections
//    (autocannon): mTLS-bound Bearer, DPoP with a fresh proof per request, HTTPSig with a fresh
//    signature (fresh nonce) per request. Tokens from the introspection stub (oidc-provider cannot
//    bind a token to an httpsig key). Pinned as bench/dpop.ts pins when taskset is there.
//
//   node bench/httpsig.ts   ROUNDS (default 5) x SECONDS (default 4) per method; ONLY=micro: part 1 alone
import { createPrivateKey, createPublicKey, generateKeyPairSync, type JsonWebKey, randomBytes, randomUUID, sign as cryptoSign, verify as cryptoVerify, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { generateKeyPair } from 'dpop';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { accessTokenHash } from '../src/proof/dpop.ts';
import { checkHttpsigFields, DEFAULT_HTTPSIG_POLICY, type HttpsigDeps } from '../src/proof/httpsig.ts';
import type { ProofRequest } from '../src/proof/method.ts';
import { createMemoryReplayStore } from '../src/state/replay-store.ts';
import { thumbprintS256 } from '../src/tls/certificates.ts';
import { startIntrospectionStub } from '../test/fixtures/introspection-stub.ts';
import { createPki } from '../test/fixtures/stack.ts';
import { spawnChild } from './lib/children.ts';
import { runLoad } from './lib/load.ts';
import { hasTaskset, machineInfo, mainThreadCpuSeconds, pinProcess } from './lib/machine.ts';
import { median } from './lib/table.ts';
import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const SECONDS = Number(process.env.SECONDS ?? 4);
const CONNECTIONS = 32;
const HERE = import.meta.dirname;
const ORIGIN = 'https://bench.test';
const PATH = '/x';

const pinning = machineInfo(false).cores >= 2 && hasTaskset();
if (pinning) pinProcess(process.pid, '1');
console.log('machine', JSON.stringify(machineInfo(pinning)));

// ------------------------------------------------------------------ 1. one check vs crypto.verify
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const cnf = { jwk: { ...publicKey.export({ format: 'jwk' }), alg: 'Ed25519' } };
const TOKEN = 'token-for-the-micro-benchmark';
const authorization = `HTTPSig ${TOKEN}`;
const TARGET = `${ORIGIN}${PATH}?q=1`;
/** A signed request as a client sends it: its Signature-Input, its Signature, and the base signed. */
function signedRequest(created: number): { input: string; signature: string; base: string } {
  const params = `("@method" "@target-uri" "authorization");created=${created};nonce="${randomBytes(16).toString('base64url')}";tag="httpsig-oauth"`;
  const base = `"@method": GET\n"@target-uri": ${TARGET}\n"authorization": ${authorization}\n"@signature-params": ${params}`;
  return { input: `sig1=${params}`, signature: `sig1=:${cryptoSign(null, Buffer.from(base), privateKey).toString('base64')}:`, base };
}
const M = 3000;
const checkUs: number[] = [];
const bareUs: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const now = Math.floor(Date.now() / 1000);
  const requests = Array.from({ length: M }, () => signedRequest(now));
  const deps: HttpsigDeps = { policy: DEFAULT_HTTPSIG_POLICY, maxBufferedBodyBytes: 1 << 20, replayStore: createMemoryReplayStore({ maxEntries: 10 * M }), now: () => Date.now() / 1000, keys: new LRUCache({ max: 100 }) };
  const key = createPublicKey({ key: cnf.jwk, format: 'jwk' });
  // CPU time of this thread (not wall time, which other processes on a shared machine stretch),
  // the two forms interleaved in chunks of 100 so that a drift in the machine favours neither.
  let checkCpu = 0;
  let bareCpu = 0;
  for (let at = 0; at < M; at += 100) {
    const chunk = requests.slice(at, at + 100);
    let before = process.threadCpuUsage();
    for (const r of chunk) {
      const request: ProofRequest = {
        lines: (name) => (name === 'signature-input' ? [r.input] : name === 'signature' ? [r.signature] : name === 'authorization' ? [authorization] : undefined),
        method: 'GET',
        uri: `${ORIGIN}${PATH}`,
        targetUri: TARGET,
        body: { kind: 'none' },
        accessToken: TOKEN,
      };
      const fields = checkHttpsigFields(request, deps);
      if (!fields.ok || !('confirm' in fields)) throw new Error('fields refused');
      const confirmed = await fields.confirm(cnf);
      if (!confirmed.ok) throw new Error(`signature refused: ${confirmed.error.reason}`);
    }
    let used = process.threadCpuUsage(before);
    checkCpu += used.user + used.system;
    // The bare form: the same signature over the same base, an imported key, the base64 decoded.
    before = process.threadCpuUsage();
    for (const r of chunk) {
      if (!cryptoVerify(null, Buffer.from(r.base), key, Buffer.from(r.signature.slice(6, -1), 'base64'))) throw new Error('bad signature');
    }
    used = process.threadCpuUsage(before);
    bareCpu += used.user + used.system;
  }
  checkUs.push(checkCpu / M);
  bareUs.push(bareCpu / M);
}
const check = median(checkUs);
const bare = median(bareUs);
console.log(`\none Ed25519 HTTP message signature, ${M} requests x ${ROUNDS} rounds (median CPU µs per request)`);
console.log(`  httpsig check (fields, rules, base, key, verify, nonce)  ${check.toFixed(1)}`);
console.log(`  bare crypto.verify, KeyObject                            ${bare.toFixed(1)}`);
console.log(`  ratio                                                    ${(check / bare).toFixed(2)}x   (goal <= 1.3x, issue 30)`);

// ------------------------------------------------------------------ 2. through cnfguard, cache hit
if (process.env.ONLY === 'micro') process.exit(0);
const pki = await createPki();
const stub = await startIntrospectionStub(pki.certs.server);
const client = pki.certs.clients.client1;
const exp = Math.floor(Date.now() / 1000) + 3600;
const dpopKey = await generateKeyPair('ES256', { extractable: true });
const jkt = await calculateJwkThumbprint((await exportJWK(dpopKey.publicKey)) as JWK, 'sha256');
const tokens = { mtls: 'bench-mtls', dpop: 'bench-dpop', httpsig: 'bench-httpsig' };
stub.answers.set(tokens.mtls, { active: true, client_id: 'app', exp, cnf: { 'x5t#S256': thumbprintS256(new X509Certificate(client.cert).raw) } });
stub.answers.set(tokens.dpop, { active: true, client_id: 'app', exp, token_type: 'DPoP', cnf: { jkt } });
stub.answers.set(tokens.httpsig, { active: true, client_id: 'app', exp, token_type: 'httpsig', cnf });
const upstream = await spawnChild({ name: 'upstream', script: join(HERE, 'servers', 'upstream.ts'), cpu: pinning ? '1' : undefined });
const configFile = join(pki.dir, 'httpsig-bench.yaml');
writeFileSync(
  configFile,
  stringify({
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.files.server.cert, key: pki.files.server.key },
    introspection: { url: stub.url, clientId: 'rs', clientSecret: 'rs-secret', ca: pki.files.ca, timeoutMs: 2000, probeAtStartup: false },
    upstream: upstream.ready.url,
    admin: { host: '127.0.0.1', port: 0 },
    publicOrigin: ORIGIN,
    methods: ['mtls', 'dpop', 'httpsig'],
    // Fresh signatures are made before each round: at this rate a round's last one is some seconds old.
    httpsig: { maxAgeSeconds: 300 },
  }),
);
const guard = await spawnChild({ name: 'cnfguard', script: join(HERE, 'servers', 'guard.ts'), args: [configFile], cpu: pinning ? '0' : undefined, stdout: 'ignore' });
const base = { url: guard.ready.url, path: PATH, cert: client.cert, key: client.key, connections: CONNECTIONS, durationSeconds: SECONDS, serverPids: () => [guard.pid], sidePids: () => [upstream.pid] };
const signingKey = privateKey;
const dpopJwk = await exportJWK(dpopKey.publicKey);
const dpopPrivate = createPrivateKey({ key: (await exportJWK(dpopKey.privateKey)) as JsonWebKey, format: 'jwk' });
const headerPart = Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: dpopJwk.kty, crv: dpopJwk.crv, x: dpopJwk.x, y: dpopJwk.y } })).toString('base64url');
const ath = accessTokenHash(tokens.dpop);
/** Enough fresh proofs or signatures for a round at 20k req/s; a shortfall shows as non-2xx (a replay). */
const POOL = Math.max(1000, 20_000 * SECONDS);
function dpopPool(): Record<string, string>[] {
  const iat = Math.floor(Date.now() / 1000);
  return Array.from({ length: POOL }, () => {
    const signed = `${headerPart}.${Buffer.from(JSON.stringify({ jti: randomUUID(), htm: 'GET', htu: `${ORIGIN}${PATH}`, iat, ath })).toString('base64url')}`;
    return { authorization: `DPoP ${tokens.dpop}`, dpop: `${signed}.${cryptoSign('sha256', Buffer.from(signed), { key: dpopPrivate, dsaEncoding: 'ieee-p1363' }).toString('base64url')}` };
  });
}
function httpsigPool(): Record<string, string>[] {
  const created = Math.floor(Date.now() / 1000);
  const auth = `HTTPSig ${tokens.httpsig}`;
  return Array.from({ length: POOL }, () => {
    const params = `("@method" "@target-uri" "authorization");created=${created};nonce="${randomBytes(16).toString('base64url')}";tag="httpsig-oauth"`;
    const signatureBase = `"@method": GET\n"@target-uri": ${ORIGIN}${PATH}\n"authorization": ${auth}\n"@signature-params": ${params}`;
    return { authorization: auth, 'signature-input': `sig1=${params}`, signature: `sig1=:${cryptoSign(null, Buffer.from(signatureBase), signingKey).toString('base64')}:` };
  });
}
async function load(method: 'mtls' | 'dpop' | 'httpsig') {
  if (method === 'mtls') return runLoad({ ...base, token: tokens.mtls });
  const pool = method === 'dpop' ? dpopPool() : httpsigPool();
  let next = 0;
  return runLoad({ ...base, token: tokens[method], headersPerRequest: () => pool[next++ % pool.length] as Record<string, string> });
}
const METHODS = ['mtls', 'dpop', 'httpsig'] as const;
for (const method of METHODS) await load(method);
const rates = { mtls: [] as number[], dpop: [] as number[], httpsig: [] as number[] };
/** cnfguard's event-loop CPU per request: steadier than req/s on a machine others load. */
const loopCpu = { mtls: [] as number[], dpop: [] as number[], httpsig: [] as number[] };
for (let round = 1; round <= ROUNDS; round++) {
  // Rotate which goes first, so that a drift in the machine's load favours none.
  const order = [...METHODS.slice(round % 3), ...METHODS.slice(0, round % 3)];
  for (const method of order) {
    const loopBefore = mainThreadCpuSeconds(guard.pid) ?? Number.NaN;
    const result = await load(method);
    const loopUs = (((mainThreadCpuSeconds(guard.pid) ?? Number.NaN) - loopBefore) * 1e6) / result.requests;
    loopCpu[method].push(loopUs);
    if (result.non2xx + result.errors > 0) throw new Error(`${method}: ${result.non2xx} non-2xx ${JSON.stringify(result.statusCodes)}, ${result.errors} errors`);
    rates[method].push(result.rps);
    console.log(`  round ${round} ${method.padEnd(7)} ${result.rps} req/s (${result.requests})  event loop ${loopUs.toFixed(0)} µs/req  p50 ${result.p50Ms} ms  p99 ${result.p99Ms} ms  server CPU ${result.serverCpuPct ?? '-'}%`);
  }
}
const [mtls, dpop, httpsig] = [median(rates.mtls), median(rates.dpop), median(rates.httpsig)];
console.log(`\nthrough cnfguard, token cache hit, ${CONNECTIONS} connections, ${ROUNDS} rounds x ${SECONDS} s (median req/s)`);
console.log(`  mTLS-bound, Bearer                  ${mtls}`);
console.log(`  DPoP-bound, fresh proofs (ES256)    ${dpop}   (${(dpop / mtls).toFixed(2)}x mTLS)`);
console.log(`  httpsig-bound, fresh signatures     ${httpsig}   (${(httpsig / mtls).toFixed(2)}x mTLS, ${(httpsig / dpop).toFixed(2)}x DPoP; Ed25519)`);
console.log(`  event loop CPU per request: mTLS ${median(loopCpu.mtls).toFixed(0)} µs, DPoP ${median(loopCpu.dpop).toFixed(0)} µs, httpsig ${median(loopCpu.httpsig).toFixed(0)} µs`);
await guard.stop();
await upstream.stop();
await stub.stop();
await pki.cleanup();
