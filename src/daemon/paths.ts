import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's own directory (dist/src/daemon → package root), for the native helper and seed images. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const ATTACH_HELPER = join(PACKAGE_ROOT, 'build', 'berth-attach');
export const RUNC_SHIM = join(PACKAGE_ROOT, 'build', 'berth-runc');
export const BUSYBOX_TARBALL = join(PACKAGE_ROOT, 'build', 'busybox.tar');
export const DEFAULT_ROOT = '/var/lib/berth';
export const DEFAULT_SOCKET = '/run/berth/berth.sock';
export const VERSION = '0.1.0';
