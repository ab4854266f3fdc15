/**
 * Names the config schema needs from token validation, kept apart from the validators so that
 * reading a config (`cnfguard check`) does not load jose, undici and the caches.
 */
export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

export const VALIDATION_MODES = ['introspection', 'jwt', 'jwt-then-introspection'] as const;
export type ValidationMode = (typeof VALIDATION_MODES)[number];
