// node bench/dpop.ts: DPoP against mTLS through a real cnfguard (in-process, default config plus
// `methods: [mtls, dpop]`) in front of the demo oidc-provider AS, both at token cache hit; one
// proof check against a bare crypto.verify of the same ES256 signature; and the replay store's
// memory at 10k proofs/s for a whole proof lifetime. Loopback only, bounded counts; the machine
// and its load are printed, figures are medians of ROUNDS rounds.
//
//   node bench/dpop.ts            N requests per round (default 2000), ROUNDS (default 5)
import { createPublicKey, verify as cryptoVerify, type JsonWebKey } from 'node:crypto';
import { generateKeyPair, generateProof } from 'dpop';
import { Agent, request } from 'undici';
import { startAuthorizationServer } from '../demo/authorization-server.ts';
import { startEchoUpstream } from '../demo/echo-upstream.ts';
import { verifyDpopProof } from '../src/proof/dpop.ts';
import { createMemoryReplayStore, replayKey } from '../src/proof/replay-store.ts';
import { baseConfig, createPki, startGuard } from '../test/fixtures/stack.ts';
import { machineInfo } from './lib/machine.ts';
import { median } from './lib/table.ts';

const N = Number(process.env.N ?? 2000);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const CONCURRENCY = 8;

console.log('machine', JSON.stringify(machineInfo(false)));
const pki = await createPki();
const as = await startAuthorizationServer({ tls: pki.certs.server });
const upstream = await startEchoUpstream();
const guard = await startGuard(pki, { ...baseConfig(pki, as, upstream, { methods: ['mtls', 'dpop'] }), logLevel: 'info' });
const client = pki.certs.clients.client1;
const mtlsAgent = new Agent({ connect: { ca: pki.certs.ca.cert, cert: client.cert, key: client.key } });
const dpopAgent = new Agent({ connect: { ca: pki.certs.ca.cert } });
const key = await generateKeyPair('ES256');
const mtlsToken = await as.issueToken({ clientCert: client, caCert: pki.certs.ca.cert });
const dpopToken = await as.issueToken({ clientId: 'plain-app', caCert: pki.certs.ca.cert, dpopProof: (htu, htm) => generateProof(key, htu, htm) });
const url = `${guard.started.url}/x`;

async function send(headers: Record<string, string>, dispatcher: Agent): Promise<void> {
  const res = await request(url, { headers, dispatcher });
  await res.body.dump();
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
}

/** Requests per second for `count` requests, CONCURRENCY in flight. */
async function throughput(count: number, next: (i: number) => [Record<string, string>, Agent]): Promise<number> {
  let i = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (i < count) {
        const [headers, agent] = next(i++);
        await send(headers, agent);
      }
    }),
  );
  return count / ((performance.now() - started) / 1000);
}

// Proofs are made before the clock starts: the client's signing is not what is measured.
const makeProofs = (count: number) => Promise.all(Array.from({ length: count }, () => generateProof(key, url, 'GET', undefined, dpopToken)));
await send({ authorization: `Bearer ${mtlsToken}` }, mtlsAgent);
await send({ authorization: `DPoP ${dpopToken}`, dpop: (await makeProofs(1))[0] as string }, dpopAgent);
const mtlsRates: number[] = [];
const dpopRates: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const proofs = await makeProofs(N);
  mtlsRates.push(await throughput(N, () => [{ authorization: `Bearer ${mtlsToken}` }, mtlsAgent]));
  dpopRates.push(await throughput(N, (i) => [{ authorization: `DPoP ${dpopToken}`, dpop: proofs[i] as string }, dpopAgent]));
}
const mtls = median(mtlsRates);
const dpop = median(dpopRates);
console.log(`\nthrough cnfguard, token cache hit, ${CONCURRENCY} in flight, ${N} requests x ${ROUNDS} rounds (median req/s)`);
console.log(`  mTLS-bound, Bearer        ${mtls.toFixed(0)}`);
console.log(`  DPoP-bound, fresh proofs  ${dpop.toFixed(0)}`);
console.log(`  DPoP / mTLS               ${(dpop / mtls).toFixed(2)}x   (goal >= 0.7x)`);
await Promise.all([mtlsAgent.close(), dpopAgent.close()]);
await guard.stop();
await upstream.stop();
await as.stop();
await pki.cleanup();

// One proof check (parse, import the jwk, verify, claims, thumbprint, replay store) against a bare
// crypto.verify of the same signature over the same bytes with an imported key.
const HTU = 'https://api.example/x';
const TOKEN = 'token-for-the-micro-benchmark';
const M = 3000;
const proofs = await Promise.all(Array.from({ length: M }, () => generateProof(key, HTU, 'GET', undefined, TOKEN)));
const store = createMemoryReplayStore({ maxEntries: 10 * M * ROUNDS });
const deps = { policy: { algorithms: ['ES256'], proofMaxAgeSeconds: 300, clockSkewSeconds: 5 }, replayStore: store, now: () => Date.now() / 1000 };
const publicKey = createPublicKey({ key: (await crypto.subtle.exportKey('jwk', key.publicKey)) as JsonWebKey, format: 'jwk' });
const checkRates: number[] = [];
const bareRates: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  let started = performance.now();
  for (const proof of proofs) {
    const result = await verifyDpopProof({ headerLines: [proof], method: 'GET', htu: HTU, accessToken: TOKEN }, deps);
    if (!result.ok && result.check !== 'replayed') throw new Error(`proof refused: ${result.check}`);
  }
  checkRates.push((performance.now() - started) / M);
  started = performance.now();
  for (const proof of proofs) {
    const [h, p, s] = proof.split('.') as [string, string, string];
    if (!cryptoVerify('sha256', Buffer.from(`${h}.${p}`), { key: publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'))) throw new Error('bad signature');
  }
  bareRates.push((performance.now() - started) / M);
}
const check = median(checkRates);
const bare = median(bareRates);
console.log(`\none ES256 proof, ${M} proofs x ${ROUNDS} rounds (median µs per proof)`);
console.log(`  verifyDpopProof (every check)   ${(check * 1000).toFixed(1)}`);
console.log(`  bare crypto.verify, same bytes  ${(bare * 1000).toFixed(1)}`);
console.log(`  ratio                           ${(check / bare).toFixed(2)}x   (goal <= 1.3x)`);

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
