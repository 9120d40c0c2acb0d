/** What every command gets: the daemon client and docker's conventions for failing. */
import { Command } from 'commander';
import { Client, DaemonError } from './client.js';

export interface CliContext {
  client(): Client;
}

/** Ends the CLI with a message (already worded) and an exit status. */
export class CliExit extends Error {
  override name = 'CliExit';
  constructor(message: string, readonly code = 1) {
    super(message);
  }
}

/** docker prints daemon errors with this prefix, and other errors as they are. */
export function describeError(e: unknown): string {
  if (e instanceof DaemonError) return `Error response from daemon: ${e.message}`;
  if (e instanceof Error) return e.message.startsWith('Error') ? e.message : `Error: ${e.message}`;
  return String(e);
}

/**
 * Runs `action` for each argument the way docker's multi-target commands do: print what
 * succeeded, report what failed, go on, and fail at the end if anything did.
 */
export async function forEachTarget(targets: string[], action: (t: string) => Promise<string | undefined>): Promise<void> {
  const errors: string[] = [];
  for (const t of targets) {
    try {
      const line = await action(t);
      if (line !== undefined) process.stdout.write(`${line}\n`);
    } catch (e) {
      errors.push(describeError(e));
    }
  }
  if (errors.length) throw new CliExit(errors.join('\n'), 1);
}

/** A subcommand with docker's help flag (`-h` is taken by --hostname in run/create). */
export function command(name: string, description: string): Command {
  return new Command(name).description(description).helpOption('--help', 'Print usage').enablePositionalOptions();
}

/** docker's confirmation prompt for prune commands; no answer on a closed stdin means no. */
export async function confirm(message: string): Promise<boolean> {
  process.stdout.write(`${message}\nAre you sure you want to continue? [y/N] `);
  const answer = await new Promise<string>((resolve) => {
    let got = '';
    const onData = (c: Buffer) => {
      got += c.toString('utf8');
      if (got.includes('\n')) finish();
    };
    const finish = () => {
      process.stdin.off('data', onData);
      process.stdin.off('end', finish);
      process.stdin.pause();
      resolve(got.split('\n')[0]!.trim());
    };
    process.stdin.on('data', onData);
    process.stdin.on('end', finish);
    process.stdin.resume();
  });
  return /^y(es)?$/i.test(answer);
}

/** Parses docker's `--filter key=value` list into the API's filters JSON. */
export function filtersJson(list: string[]): string | undefined {
  if (!list.length) return undefined;
  const filters: Record<string, Record<string, boolean>> = {};
  for (const f of list) {
    const eq = f.indexOf('=');
    if (eq <= 0) throw new CliExit(`Error: bad format of filter (expected name=value)`, 1);
    (filters[f.slice(0, eq).trim().toLowerCase()] ??= {})[f.slice(eq + 1)] = true;
  }
  return JSON.stringify(filters);
}
