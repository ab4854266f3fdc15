/**
 * A schema built on first use and kept, for callers that parse many configs with it (tests,
 * tools: `configSchema`). A load builds its own schema and lets it go (buildConfigSchema), so an
 * idle `run` holds no zod object of the config (issue 32: ~1,000 objects with their closures).
 */
export function builtOnFirstUse<T extends object>(build: () => T): T {
  let built: T | undefined;
  const value = (): T => (built ??= build());
  // The target stays an empty object; every read goes to the built value, as if it were it.
  return new Proxy({} as T, {
    get: (_target, key) => Reflect.get(value(), key),
    has: (_target, key) => Reflect.has(value(), key),
    ownKeys: () => Reflect.ownKeys(value()),
    // Reported configurable: a proxy may not claim a fixed property its (empty) target lacks.
    getOwnPropertyDescriptor: (_target, key) => {
      const descriptor = Reflect.getOwnPropertyDescriptor(value(), key);
      return descriptor === undefined ? undefined : { ...descriptor, configurable: true };
    },
    getPrototypeOf: () => Reflect.getPrototypeOf(value()),
  });
}
