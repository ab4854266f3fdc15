/**
 * The one JWS signature check of a DPoP proof (RFC 7515 §5.2 over the compact serialisation's
 * signing input), behind one function, {@link verifyJwsSignature}: node:crypto's verify with the
 * key already imported (by jose, which checks it against `alg`). Measured against a bare
 * crypto.verify by `npm run bench:dpop` (goal: a whole proof check within 1.25x of it).
 */
import { constants, verify as verifySignature, type KeyObject, type VerifyKeyObjectInput } from 'node:crypto';
import type { AsymmetricJwsAlgorithm } from '../oauth/jws-algorithms.ts';

/** node:crypto verify parameters per JWS algorithm (RFC 7518 §3; RFC 8037 §3.1). ECDSA signatures are converted to DER here. */
const SIGNATURE: Readonly<Record<AsymmetricJwsAlgorithm, { hash: string | null; padding?: number; saltLength?: number; ecdsaBytes?: number }>> = {
  ES256: { hash: 'sha256', ecdsaBytes: 32 },
  ES384: { hash: 'sha384', ecdsaBytes: 48 },
  ES512: { hash: 'sha512', ecdsaBytes: 66 },
  PS256: { hash: 'sha256', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
  PS384: { hash: 'sha384', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 },
  PS512: { hash: 'sha512', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 },
  RS256: { hash: 'sha256', padding: constants.RSA_PKCS1_PADDING },
  RS384: { hash: 'sha384', padding: constants.RSA_PKCS1_PADDING },
  RS512: { hash: 'sha512', padding: constants.RSA_PKCS1_PADDING },
  EdDSA: { hash: null },
  Ed25519: { hash: null },
};

/** One DER INTEGER (X.690 §8.3) of an unsigned big-endian value. */
function derInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0 && ((bytes[start + 1] as number) & 0x80) === 0) start++;
  const value = bytes.subarray(start);
  const pad = ((value[0] as number) & 0x80) !== 0 ? 1 : 0;
  const out = Buffer.allocUnsafe(2 + pad + value.length);
  out[0] = 0x02;
  out[1] = pad + value.length;
  if (pad === 1) out[2] = 0;
  value.copy(out, 2 + pad);
  return out;
}

/**
 * A JWS ECDSA signature (R || S, RFC 7518 §3.4) as the DER SEQUENCE node:crypto verifies by default:
 * verify() with a bare KeyObject and a DER signature cost 0.7x of the same call with
 * `dsaEncoding: 'ieee-p1363'` here (bench/dpop.ts). Undefined when the length is wrong.
 */
export function ecdsaSignatureToDer(signature: Buffer, bytes: number): Buffer | undefined {
  if (signature.length !== 2 * bytes) return undefined;
  const r = derInteger(signature.subarray(0, bytes));
  const s = derInteger(signature.subarray(bytes));
  const length = r.length + s.length;
  // P-521's two integers can pass 127 bytes: the long form of the length.
  const head = length < 0x80 ? Buffer.from([0x30, length]) : Buffer.from([0x30, 0x81, length]);
  return Buffer.concat([head, r, s]);
}

/**
 * Where a proof's signature is checked. `event-loop`: synchronously, the cheapest per proof when
 * the process has one CPU. `threadpool`: crypto.verify with a callback, on libuv's threadpool, so
 * that the 50-80 µs of an ES256 check run on a spare CPU while the event loop serves other
 * requests (it costs the event loop about 12 µs per proof instead; bench/dpop.ts).
 */
export type SignatureThread = 'event-loop' | 'threadpool';

/** `threadpool` when the process may use more CPUs than it runs event loops (workers), else `event-loop`. */
export function signatureThreadFor(usableCpus: number, eventLoops: number): SignatureThread {
  return usableCpus > eventLoops ? 'threadpool' : 'event-loop';
}

function checkSignature(where: SignatureThread, hashName: string | null, signed: Buffer, key: KeyObject | VerifyKeyObjectInput, signature: Buffer): boolean | Promise<boolean> {
  if (where === 'event-loop') return verifySignature(hashName, signed, key, signature);
  return new Promise((resolve) => verifySignature(hashName, signed, key, signature, (err, valid) => resolve(err === null && valid)));
}

/**
 * Whether `signature` is `alg`'s signature of `signed` by `key`: a boolean on the spot on the event
 * loop (no microtask turn), a promise from the threadpool. False for an unknown `alg`; may throw
 * for a key of another type (the caller refuses then).
 */
export function verifyJwsSignature(alg: string, key: KeyObject, signed: Buffer, signature: Buffer, where: SignatureThread): boolean | Promise<boolean> {
  const params = Object.hasOwn(SIGNATURE, alg) ? SIGNATURE[alg as AsymmetricJwsAlgorithm] : undefined;
  if (params === undefined) return false;
  if (params.ecdsaBytes !== undefined) {
    const der = ecdsaSignatureToDer(signature, params.ecdsaBytes);
    return der !== undefined && checkSignature(where, params.hash, signed, key, der);
  }
  if (params.padding === undefined) return checkSignature(where, params.hash, signed, key, signature);
  return checkSignature(where, params.hash, signed, { key, padding: params.padding, ...(params.saltLength !== undefined && { saltLength: params.saltLength }) }, signature);
}
