import { readFileSync } from 'node:fs';

/**
 * Whether a process with this pid is running. A zombie is not: signal 0 still reaches it. A
 * process berthd adopted across its own restart (its etcd member) is init's child, and once killed
 * it stays a zombie until init waits for it: about 1.3 s on this machine's VM, never under an init
 * that does not wait (a container's shell as PID 1). Taken for alive meanwhile, the member was not
 * started again, and a stop waited for it.
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    // Gone between the two looks, or no /proc here: signal 0 has answered.
    return existsNow(pid);
  }
  // The state follows the command's closing parenthesis (the command may hold spaces and parentheses).
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

function existsNow(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
