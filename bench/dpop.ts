// node bench/dpop.ts: DPoP against mTLS through cnfguard in its own process (default config plus
// `methods: [mtls, dpop]`; when taskset is there its event loop is pinned to CPU 0 and its other
// threads may use any CPU, as a sidecar's would; the load generator, upstream and AS on CPU 1),
// both at token cache hit, 32 keep-alive connections (autocannon), a fresh proof per
// DPoP request; one proof check against a bare crypto.verify of the same ES256 signature; and the
// replay store's memory at 10k proofs/s for a whole proof lifetime. Loopback only, bounded counts;
// the machine and its load are printed, figures are medians of ROUNDS rounds.
//
//   node --expose-gc bench/dpop.ts   ROUNDS (default 5) x SECONDS (default 4) per method;
//                                    PROFILE=DIR writes the server's CPU profile there, of
//                                    PROFILE_METHOD (dpop, the default, or mtls) requests only
import { createPrivateKey, createPublicKey, randomUUID, sign as cryptoSign, verify as cryptoVerify, type JsonWebKey } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPair, generateProof } from 'dpop';
import { startAuthorizationServer } from '../demo/authorization-server.ts';
import { accessTokenHash, createDpopCaches, verifyDpopProof } from '../src/proof/dpop.ts';
import { ecdsaSignatureToDer, signatureThreadFor } from '../src/proof/jws-signature.ts';
import { createMemoryReplayStore, replayKey } from '../src/state/replay-store.ts';
import { createPki } from '../test/fixtures/stack.ts';
import { spawnChild } from './lib/children.ts';
import { writeGuardConfig } from './lib/guard-config.ts';
import { runLoad } from './lib/load.ts';
import { hasTaskset, machineInfo, mainThreadCpuSeconds, pinMainThread, pinProcess } from './lib/machine.ts';
import { median } from './lib/table.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const SECONDS = Number(process.env.SECONDS ?? 4);
const CONNECTIONS = 32;
const HERE = import.meta.dirname;

const pinning = machineInfo(false).cores >= 2 && hasTaskset();
if (pinning) pinProcess(process.pid, '1');
console.log('machine', JSON.stringify(machineInfo(pinning)));
const pki = await createPki();
const as = await startAuthorizationServer({ tls: pki.certs.server });
const upstream = await spawnChild({ name: 'upstream', script: join(HERE, 'servers', 'upstream.ts'), cpu: pinning ? '1' : undefined });
const configFile = writeGuardConfig(pki, as, upstream.ready.url, 'dpop-bench', { methods: ['mtls', 'dpop'] });
/** CPU 0 for the event loop, and every CPU but the load generator's when there are 3 or more. */
function guardCpus(cores: number): string {
  return cores >= 3 ? `0,2-${cores - 1}` : `0-${cores - 1}`;
}
// What the guard's default config chooses on those CPUs (workers: 1); unpinned, on all of them.
const cores = machineInfo(false).cores;
const signatureThread = signatureThreadFor(pinning && cores >= 3 ? cores - 1 : cores, 1);
const profileDir = process.env.PROFILE;
const profileMethod = process.env.PROFILE_METHOD === 'mtls' ? 'mtls' : 'dpop';
if (profileDir !== undefined) mkdirSync(profileDir, { recursive: true });
const guard = await spawnChild({
  name: 'cnfguard',
  script: join(HERE, 'servers', 'guard.ts'),
  args: [configFile],
  // Started on more than one CPU, so that the default config sees a spare one and checks DPoP
  // signatures on the threadpool; then its event loop alone is pinned to CPU 0 (below). With 3 or
  // more cores its other threads keep off the load generator's CPU 1; with 2 they must share it.
  cpu: pinning ? guardCpus(cores) : undefined,
  stdout: 'ignore',
  ...(profileDir !== undefined && { nodeFlags: ['--cpu-prof', '--cpu-prof-dir', profileDir] }),
});
// The threadpool exists by now (the start-up log line was written through it) and keeps every CPU.
if (pinning) pinMainThread(guard.pid, '0');
const client = pki.certs.clients.client1;
const key = await generateKeyPair('ES256', { extractable: true });
const mtlsToken = await as.issueToken({ clientCert: client, caCert: pki.certs.ca.cert });
const dpopToken = await as.issueToken({ clientId: 'plain-app', caCert: pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
const url = guard.ready.url;
const path = '/x';
const htu = `${url}${path}`;

// Proofs are signed before each round, by node:crypto (synchronously, the same ES256 key): the
// client's signing is not what is measured, and the load generator never waits for a proof.
const jwk = (await crypto.subtle.exportKey('jwk', key.publicKey)) as JsonWebKey;
const signingKey = createPrivateKey({ key: (await crypto.subtle.exportKey('jwk', key.privateKey)) as JsonWebKey, format: 'jwk' });
const headerPart = Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } })).toString('base64url');
const ath = accessTokenHash(dpopToken);
function signProofs(count: number): string[] {
  const iat = Math.floor(Date.now() / 1000);
  return Array.from({ length: count }, () => {
    const signed = `${headerPart}.${Buffer.from(JSON.stringify({ jti: randomUUID(), htm: 'GET', htu, iat, ath })).toString('base64url')}`;
    return `${signed}.${cryptoSign('sha256', Buffer.from(signed), { key: signingKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  });
}

const base = { url, path, cert: client.cert, key: client.key, connections: CONNECTIONS, durationSeconds: SECONDS, serverPids: () => [guard.pid], sidePids: () => [upstream.pid] };
const mtlsLoad = () => runLoad({ ...base, token: mtlsToken });
async function dpopLoad() {
  // 20k req/s is past what one core serves here; a shortfall shows as non-2xx (a replayed jti).
  const pool = signProofs(Math.max(1000, 20_000 * SECONDS));
  let next = 0;
  return runLoad({ ...base, token: dpopToken, headersPerRequest: () => ({ authorization: `DPoP ${dpopToken}`, dpop: pool[next++ % pool.length] as string }) });
}
// Warm-up of both (of the profiled method only when profiling).
for (const method of ['mtls', 'dpop'] as const) {
  if (profileDir !== undefined && method !== profileMethod) continue;
  const warm = method === 'mtls' ? await mtlsLoad() : await dpopLoad();
  if (profileDir !== undefined) console.log(`  warm-up ${method} ${warm.requests} requests`);
}
const rates = { mtls: [] as number[], dpop: [] as number[] };
const cpu = { mtls: [] as number[], dpop: [] as number[] };
const loopCpu = { mtls: [] as number[], dpop: [] as number[] };
for (let round = 1; round <= ROUNDS; round++) {
  // Alternate which goes first, so that a drift in the machine's load favours neither.
  // A profile is of one method's requests only.
  const order = profileDir !== undefined ? ([profileMethod] as const) : round % 2 === 1 ? (['mtls', 'dpop'] as const) : (['dpop', 'mtls'] as const);
  for (const method of order) {
    const loopBefore = mainThreadCpuSeconds(guard.pid) ?? Number.NaN;
    const result = method === 'mtls' ? await mtlsLoad() : await dpopLoad();
    // The event loop's own CPU per request: steadier than req/s on a noisy machine, and what a
    // spare CPU for the threadpool cannot take away.
    const loopUs = (((mainThreadCpuSeconds(guard.pid) ?? Number.NaN) - loopBefore) * 1e6) / result.requests;
    loopCpu[method].push(loopUs);
    if (result.non2xx + result.errors > 0) throw new Error(`${method}: ${result.non2xx} non-2xx ${JSON.stringify(result.statusCodes)}, ${result.errors} errors`);
    rates[method].push(result.rps);
    cpu[method].push(result.serverCpuPct ?? Number.NaN);
    console.log(`  round ${round} ${method.padEnd(5)} ${result.rps} req/s (${result.requests})  event loop ${loopUs.toFixed(0)} µs/req  p50 ${result.p50Ms} ms  p99 ${result.p99Ms} ms  server CPU ${result.serverCpuPct ?? '-'}%  load generator ${result.loadgenCpuPct}%  upstream ${result.upstreamCpuPct}%  others ${result.foreignCpuPct ?? '-'}%`);
  }
}
if (profileDir !== undefined) {
  await guard.stop();
  await upstream.stop();
  await as.stop();
  await pki.cleanup();
  process.exit(0);
}
const mtls = median(rates.mtls);
const dpop = median(rates.dpop);
console.log(`\nthrough cnfguard, token cache hit, ${CONNECTIONS} connections, ${ROUNDS} rounds x ${SECONDS} s (median req/s)`);
console.log(`  mTLS-bound, Bearer        ${mtls}   (server CPU ${median(cpu.mtls)}%)`);
console.log(`  DPoP-bound, fresh proofs  ${dpop}   (server CPU ${median(cpu.dpop)}%)`);
console.log(`  DPoP / mTLS               ${(dpop / mtls).toFixed(2)}x   (goal >= 0.7x)`);
console.log(`  event loop CPU per request: mTLS ${median(loopCpu.mtls).toFixed(0)} µs, DPoP ${median(loopCpu.dpop).toFixed(0)} µs (signatures: ${signatureThread})`);
await guard.stop();
await upstream.stop();
await as.stop();
await pki.cleanup();

// One proof check (parse, import the jwk, verify, claims, thumbprint, replay store) against a bare
// crypto.verify of the same signature over the same bytes with an imported key.
const HTU = 'https://api.example/x';
const TOKEN = 'token-for-the-micro-benchmark';
const M = 3000;
// Fresh proofs for every round: each check runs to the end and is accepted (a replayed proof would
// measure the refusal path instead).
const proofsOfRound = await Promise.all(Array.from({ length: ROUNDS }, () => Promise.all(Array.from({ length: M }, () => generateProof(key, HTU, 'GET', undefined, TOKEN)))));
const store = createMemoryReplayStore({ maxEntries: 10 * M * ROUNDS });
const deps = { policy: { algorithms: ['ES256'], proofMaxAgeSeconds: 300, clockSkewSeconds: 5 }, replayStore: store, now: () => Date.now() / 1000, caches: createDpopCaches() };
const publicKey = createPublicKey({ key: (await crypto.subtle.exportKey('jwk', key.publicKey)) as JsonWebKey, format: 'jwk' });
const derOf = (signature: string) => {
  const raw = Buffer.from(signature, 'base64url');
  return ecdsaSignatureToDer(raw, 32) as Buffer;
};
const checkRates: number[] = [];
const bareRates: number[] = [];
const bareP1363Rates: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const proofs = proofsOfRound[round] as string[];
  let started = performance.now();
  for (const proof of proofs) {
    const result = await verifyDpopProof({ headerLines: [proof], method: 'GET', htu: HTU, accessToken: TOKEN }, deps);
    if (!result.ok) throw new Error(`proof refused: ${result.check}`);
  }
  checkRates.push((performance.now() - started) / M);
  // The fastest bare form: a KeyObject and a DER signature (the conversion included).
  started = performance.now();
  for (const proof of proofs) {
    const [h, p, s] = proof.split('.') as [string, string, string];
    if (!cryptoVerify('sha256', Buffer.from(`${h}.${p}`), publicKey, derOf(s))) throw new Error('bad signature');
  }
  bareRates.push((performance.now() - started) / M);
  started = performance.now();
  for (const proof of proofs) {
    const [h, p, s] = proof.split('.') as [string, string, string];
    if (!cryptoVerify('sha256', Buffer.from(`${h}.${p}`), { key: publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'))) throw new Error('bad signature');
  }
  bareP1363Rates.push((performance.now() - started) / M);
}
const check = median(checkRates);
const bare = median(bareRates);
console.log(`\none ES256 proof, ${M} proofs x ${ROUNDS} rounds (median µs per proof)`);
console.log(`  verifyDpopProof (every check)                 ${(check * 1000).toFixed(1)}`);
console.log(`  bare crypto.verify, KeyObject + DER signature ${(bare * 1000).toFixed(1)}`);
console.log(`  bare crypto.verify, dsaEncoding ieee-p1363    ${(median(bareP1363Rates) * 1000).toFixed(1)}`);
console.log(`  ratio to the fastest bare form                ${(check / bare).toFixed(2)}x   (goal <= 1.25x, issue 27)`);

// With signatures on the threadpool: the event loop's CPU per proof, 32 checks in flight, against
// a bare callback crypto.verify; this process may now use every CPU (the servers are stopped), so
// the threadpool runs beside the event loop as it would in cnfguard with a spare CPU.
if (pinning) pinProcess(process.pid, `0-${cores - 1}`);
async function eventLoopPerItem(items: readonly string[], one: (proof: string) => Promise<unknown>): Promise<number> {
  // The main thread's own CPU time (not its busy wall time, which the threadpool's threads
  // stretch when they take its CPU).
  const before = process.threadCpuUsage();
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < items.length) await one(items[next++] as string);
    }),
  );
  const used = process.threadCpuUsage(before);
  return (used.user + used.system) / items.length;
}
const pooledProofs = await Promise.all(Array.from({ length: ROUNDS }, () => Promise.all(Array.from({ length: M }, () => generateProof(key, HTU, 'GET', undefined, TOKEN)))));
const pooledDeps = { ...deps, signatureThread: 'threadpool' as const };
const pooledCheck: number[] = [];
const pooledBare: number[] = [];
for (const proofs of pooledProofs) {
  pooledCheck.push(
    await eventLoopPerItem(proofs, async (proof) => {
      const result = await verifyDpopProof({ headerLines: [proof], method: 'GET', htu: HTU, accessToken: TOKEN }, pooledDeps);
      if (!result.ok) throw new Error(`proof refused: ${result.check}`);
    }),
  );
  pooledBare.push(
    await eventLoopPerItem(proofs, (proof) => {
      const [h, p, s] = proof.split('.') as [string, string, string];
      return new Promise((resolve, reject) => cryptoVerify('sha256', Buffer.from(`${h}.${p}`), publicKey, derOf(s), (err, valid) => (err === null && valid ? resolve(valid) : reject(err ?? new Error('bad signature')))));
    }),
  );
}
console.log(`\nsignatures on the threadpool, 32 in flight: event-loop CPU per proof (median µs)`);
console.log(`  verifyDpopProof (every check)                 ${median(pooledCheck).toFixed(1)}   (on the event loop: ${(check * 1000).toFixed(1)})`);
console.log(`  bare crypto.verify with a callback            ${median(pooledBare).toFixed(1)}`);

// The replay store at 10k proofs/s for a proof lifetime (proofMaxAgeSeconds 300 + skew 5): that
// many keys are live at once. Measured by filling a store on a simulated clock.
const RATE = 10_000;
const LIFETIME = 305;
const live = RATE * LIFETIME;
globalThis.gc?.();
const before = process.memoryUsage().heapUsed;
let t = 0;
const big = createMemoryReplayStore({ maxEntries: live, now: () => t });
for (let i = 0; i < live; i++) {
  t = i / RATE;
  await big.remember(replayKey('thumbprint-of-some-client-key-43-characters', `jti-${i}`), t + LIFETIME);
}
globalThis.gc?.();
const perEntry = (process.memoryUsage().heapUsed - before) / big.size;
console.log(`\nreplay store at ${RATE} proofs/s for ${LIFETIME} s: ${big.size} live keys`);
console.log(`  ~${perEntry.toFixed(0)} bytes per key: ${((perEntry * live) / 2 ** 20).toFixed(0)} MiB for that load`);
console.log(`  default bound dpop.replayStoreMaxEntries 200000: ~${((perEntry * 200_000) / 2 ** 20).toFixed(0)} MiB, enough for ${(200_000 / LIFETIME).toFixed(0)} proofs/s per replica;`);
console.log('  past it new proofs get 503 (fail closed) until keys expire; with sharedState the keys live in Redis instead.');
