import { promises as fs } from 'node:fs';

/**
 * berthd's pidfile: its pid and the kernel's start time of that process (field 22 of
 * /proc/PID/stat, in clock ticks since boot). A pid alone is not proof of a running berthd: after a
 * crash the pid may name a zombie, or, after a reboot or enough forks, an unrelated process. A
 * stale pidfile must never keep berthd from starting.
 */

interface ProcInfo { state: string; startTime: string; cmdline: string }

async function procInfo(pid: number, proc: string): Promise<ProcInfo | undefined> {
  try {
    const stat = await fs.readFile(`${proc}/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may itself hold spaces or ')': split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmdline = await fs.readFile(`${proc}/${pid}/cmdline`, 'utf8').catch(() => '');
    return { state: fields[0] ?? '', startTime: fields[19] ?? '', cmdline: cmdline.replace(/\0/g, ' ') };
  } catch {
    return undefined;
  }
}

/** The text berthd writes: "PID START_TIME". */
export async function pidFileText(pid = process.pid, proc = '/proc'): Promise<string> {
  const me = await procInfo(pid, proc);
  return `${pid}${me?.startTime ? ` ${me.startTime}` : ''}\n`;
}

/**
 * The pid of a live berthd that the pidfile's text names, or undefined when it is stale: no such
 * process, a zombie or dead one, another start time (the pid was reused), or a process that is not
 * berthd (a pidfile of an older berthd has no start time, so its command line decides).
 */
export async function livePidFileHolder(text: string, self = process.pid, proc = '/proc'): Promise<number | undefined> {
  const [pidText, startTime] = text.trim().split(/\s+/);
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0 || pid === self) return undefined;
  const info = await procInfo(pid, proc);
  if (!info || info.state === 'Z' || info.state === 'X' || info.state === 'x') return undefined;
  if (startTime !== undefined && startTime !== info.startTime) return undefined;
  if (!/berthd/.test(info.cmdline)) return undefined;
  return pid;
}
