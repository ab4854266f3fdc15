/**
 * Names the config schema needs from token validation, kept apart from the validators so that
 * reading a config (`cnfguard check`) does not load jose, undici and the caches.
 */
import { ASYMMETRIC_JWS_ALGORITHMS } from '../oauth/jws-algorithms.ts';

export const JWT_ALGORITHMS = ASYMMETRIC_JWS_ALGORITHMS;

export const VALIDATION_MODES = ['introspection', 'jwt', 'jwt-then-introspection'] as const;
export type ValidationMode = (typeof VALIDATION_MODES)[number];
