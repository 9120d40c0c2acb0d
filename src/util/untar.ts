import { BadRequestError } from './errors.js';
import { run } from './exec.js';

/** tar's words for the machine's trouble, not the archive's: those stay server errors. */
const HOST_TROUBLE = /No space left on device|Read-only file system|Cannot allocate memory|Too many open files/;

/**
 * GNU tar -x of an archive file into `dir`. A refusal is a 400 in tar's own words ("This does not
 * look like a tar archive", "Unexpected EOF in archive"), without the command line: that named
 * berth's spool and staging paths under its root, which are no business of the client's.
 */
export async function untar(file: string, dir: string, flags: string[]): Promise<void> {
  const r = await run('tar', [...flags, '-xf', file, '-C', dir]);
  if (r.code === 0) return;
  const words = r.stderr.split('\n')
    .map((l) => l.replace(/^tar: /, '').split(file).join('archive').split(dir).join('').trim())
    .filter((l) => l && !/^(Exiting with failure status|Error is not recoverable)/.test(l));
  const message = [...new Set(words)].slice(0, 4).join('; ') || `tar exited with status ${r.code}`;
  if (HOST_TROUBLE.test(r.stderr)) throw new Error(`unpacking the archive: ${message}`);
  throw new BadRequestError(`invalid tar archive: ${message}`);
}
