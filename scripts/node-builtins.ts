/**
 * An esbuild plugin for the production build (scripts/build.ts): the bundle takes Node's built-in
 * modules with `process.getBuiltinModule` instead of an ESM `import` (issue 32, idle memory).
 *
 * Why: an ESM import of a built-in makes Node build the module's ESM facade, which reads every
 * export once and so runs the lazy getters Node keeps for what is seldom used: `node:http`'s
 * WebSocket, CloseEvent and MessageEvent load Node's own copy of undici (fetch, WebSocket, ...:
 * ~12 MB of RSS in a bare Node, ~3 MB in an idle cnfguard), `node:fs`'s `promises`, `node:util`'s
 * `aborted`, ... `process.getBuiltinModule` returns the same module object without the facade: a
 * getter runs only when something reads it.
 *
 * Each `import ... from 'node:x'` (or 'x') in a bundled ES module resolves to a small module of its
 * own: its default export is the module object, its named exports the module's plain data
 * properties (read when the importer loads, as the facade does; those the importer does not use
 * are dropped as dead code). One such module per importer, so it lands in the importer's chunk: a
 * module shared by several would be a chunk of its own, one more file to resolve at start-up.
 * Getter-backed properties are not exported (importing one by name fails the build, loudly): read
 * them from the default export, where they stay lazy. `require` calls in bundled CommonJS are
 * left alone (they take no facade).
 */
import { createHash } from 'node:crypto';
import { builtinModules } from 'node:module';
import type { Plugin } from 'esbuild';

const NAMESPACE = 'cnfguard-node-builtin';
// Every built-in, with or without `node:` (node:test and the like exist only with the prefix).
const BUILTIN = new RegExp(`^(?:node:)?(?:${builtinModules.map((name) => name.replace(/[/\\^$*+?.()|[\]{}-]/g, '\\$&')).join('|')})$`);

/** The names a built-in exports as plain data properties (not getters, not the default). */
export function plainExports(specifier: string): string[] {
  const exported = process.getBuiltinModule(specifier) as object;
  return Object.getOwnPropertyNames(exported).filter((name) => {
    if (name === 'default' || !/^[A-Za-z_$][\w$]*$/.test(name)) return false;
    const descriptor = Object.getOwnPropertyDescriptor(exported, name);
    return descriptor !== undefined && 'value' in descriptor;
  });
}

export const nodeBuiltinsWithoutFacade: Plugin = {
  name: 'node-builtins-without-facade',
  setup(build) {
    build.onResolve({ filter: BUILTIN }, (args) => {
      if (args.kind !== 'import-statement') return undefined;
      const specifier = args.path.startsWith('node:') ? args.path : `node:${args.path}`;
      // One per importer: its path named by a digest of the importer's (no folder of it in the path).
      return { path: `${specifier}|${createHash('sha256').update(args.importer).digest('hex').slice(0, 12)}`, namespace: NAMESPACE };
    });
    build.onLoad({ filter: /.*/, namespace: NAMESPACE }, (args) => {
      const specifier = args.path.slice(0, args.path.indexOf('|'));
      // Each name read in a function marked pure, so esbuild drops the names nobody imports.
      const names = plainExports(specifier).map((name) => `export const ${name} = /* @__PURE__ */ (() => builtin.${name})();`);
      return { contents: [`const builtin = process.getBuiltinModule(${JSON.stringify(specifier)});`, 'export default builtin;', ...names].join('\n'), loader: 'js', resolveDir: process.cwd() };
    });
  },
};
