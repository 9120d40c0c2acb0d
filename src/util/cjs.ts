import { createRequire } from 'node:module';

/**
 * Loads CommonJS dependencies (dns-packet, tar-stream, node-pty, commander) with `require`.
 * Importing them as ES modules runs Node's CommonJS export lexer, which costs the daemon several
 * MiB of resident memory for nothing it uses; types still come from `import type`.
 */
export const requireCjs = createRequire(import.meta.url);
