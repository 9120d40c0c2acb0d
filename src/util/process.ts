import { readFileSync } from 'node:fs';

/**
 * Whether a process with this pid is running: it is in /proc and not a zombie (`Z`, or `X` on its
 * way out). Signal 0 is no answer, as it reaches a zombie too. A process berthd adopted across its
 * own restart (its etcd member, a container's conmon) is init's child, and once killed it stays a
 * zombie until init waits for it: about 1.3 s on this machine's VM, never under an init that does
 * not wait (a container's shell as PID 1). Taken for alive meanwhile, the etcd member was not
 * started again, and a stop waited for it.
 */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state follows the command's closing parenthesis (the command may hold spaces and parentheses).
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
