import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * Loads CommonJS dependencies (dns-packet, tar-stream, node-pty, commander) with `require`.
 * Importing them as ES modules runs Node's CommonJS export lexer, which costs the daemon several
 * MiB of resident memory for nothing it uses; types still come from `import type`.
 */
export const requireCjs = createRequire(import.meta.url);

/**
 * A lazily loaded addon of berth's own from build/ (scripts/build-native.sh makes them): loaded on
 * first use, so code that never needs it never fails for want of it.
 */
export function nativeAddon<T>(file: string, neededFor: string): () => T {
  const path = fileURLToPath(new URL(`../../../build/${file}`, import.meta.url));
  let loaded: T | undefined;
  return () => {
    if (!loaded) {
      try {
        loaded = requireCjs(path) as T;
      } catch (e) {
        throw new Error(`${neededFor} needs ${path} (build it with scripts/build-native.sh): ${(e as Error).message}`);
      }
    }
    return loaded;
  };
}
