/**
 * Remote daemons over ssh, as the docker CLI reaches them (`DOCKER_HOST=ssh://user@host`): the
 * client runs `ssh … -- host <cli> system dial-stdio` and speaks HTTP over that command's stdin and
 * stdout; on the remote, `system dial-stdio` bridges its stdin and stdout to the local daemon's
 * socket. No port is opened anywhere: ssh does the authentication and the encryption.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { Agent } from 'node:http';
import { connect, type Socket } from 'node:net';
import { Duplex } from 'node:stream';

export interface SshTarget { user?: string; host: string; port?: number }

/** `ssh://[user@]host[:port]`, with nothing after the host, as docker's connhelper accepts it. */
export function parseSshUrl(spec: string): SshTarget {
  let u: URL;
  try {
    u = new URL(spec);
  } catch {
    throw new Error(`unable to parse host "${spec}": expected ssh://[user@]host[:port]`);
  }
  if (u.protocol !== 'ssh:' || !u.hostname) throw new Error(`unable to parse host "${spec}": expected ssh://[user@]host[:port]`);
  if (u.password) throw new Error(`plain-text password is not supported in "${spec}"`);
  if ((u.pathname && u.pathname !== '/') || u.search || u.hash) throw new Error(`extra path after the host is not supported in "${spec}"`);
  return {
    host: u.hostname.replace(/^\[(.*)\]$/, '$1'),
    ...(u.username ? { user: decodeURIComponent(u.username) } : {}),
    ...(u.port ? { port: Number(u.port) } : {}),
  };
}

/**
 * The ssh command line for a target: the same flags docker's connhelper passes, so the user's
 * ~/.ssh/config (keys, jump hosts, known hosts) applies unchanged; `--` keeps a host name from
 * being read as an option.
 */
export function sshArgv(t: SshTarget, remote: string[]): string[] {
  return ['ssh', ...(t.user ? ['-l', t.user] : []), ...(t.port ? ['-p', String(t.port)] : []), '--', t.host, ...remote];
}

/** The remote command berth's own CLI asks for (the docker CLI asks for `docker system dial-stdio`). */
export const REMOTE_DIAL = ['berth', 'system', 'dial-stdio'];

/**
 * A command's stdin and stdout as one connection, for node:http's `createConnection`. HTTP half
 * closes (a hijacked exec whose input ended) become the end of the command's stdin, and a command
 * that fails before the daemon answered becomes an error carrying what it printed on stderr.
 */
export class CommandConnection extends Duplex {
  private readonly child: ChildProcessWithoutNullStreams;
  private stderr = '';
  private gotData = false;

  constructor(private readonly argv: string[]) {
    super({ allowHalfOpen: true });
    const [cmd, ...args] = argv as [string, ...string[]];
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (d: Buffer) => {
      this.gotData = true;
      if (!this.push(d)) this.child.stdout.pause();
    });
    // The end of the stream waits for the command's exit: a failure before any answer is an error.
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => { if (this.stderr.length < 8192) this.stderr += d; });
    this.child.stdin.on('error', () => undefined);
    this.child.on('error', (e) => this.destroy(new Error(`cannot run ${cmd}: ${e.message}`)));
    this.child.on('close', (code, signal) => {
      if (this.destroyed) return;
      // Before any answer the command's own words are the only explanation (auth refused, no berth
      // on the remote's PATH); after, the connection simply ended.
      if ((code === 0 && !signal) || this.gotData) return void this.push(null);
      this.destroy(new Error(`command [${this.argv.join(' ')}] has exited with ${signal ? `signal ${signal}` : `exit status ${code}`}, make sure the URL is valid and berth (or docker) is on the remote host's PATH: stderr=${this.stderr.trim()}`));
    });
  }

  override _read(): void {
    this.child.stdout.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.child.stdin.write(chunk, cb);
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.child.stdin.end(cb);
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    cb(err);
  }

  // node:http calls these on its sockets; a pipe has nothing to tune.
  setNoDelay(): this { return this; }
  setKeepAlive(): this { return this; }
  setTimeout(): this { return this; }
  ref(): this { return this; }
  unref(): this { return this; }
}

/**
 * Connections that are commands (`ssh … dial-stdio`), kept alive between requests: a CLI command
 * makes several requests (run: create, attach, wait, start), and each new ssh session costs a
 * handshake. A hijacked connection (attach, exec) leaves the pool when it is upgraded.
 */
export class CommandAgent extends Agent {
  constructor(private readonly argv: string[]) {
    super({ keepAlive: true });
  }

  override createConnection(): Duplex {
    return new CommandConnection(this.argv);
  }
}

/**
 * `system dial-stdio`: this process's stdin to the daemon's socket, the socket to stdout. The end
 * of stdin half-closes the socket (the daemon still answers); the daemon closing ends the process,
 * as docker's dial-stdio does.
 */
export function dialStdio(target: { socketPath?: string; host?: string; port?: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock: Socket = target.socketPath ? connect({ path: target.socketPath, allowHalfOpen: true }) : connect({ host: target.host!, port: target.port!, allowHalfOpen: true });
    sock.on('error', reject);
    sock.on('connect', () => {
      process.stdin.pipe(sock);
      sock.pipe(process.stdout);
    });
    sock.on('end', () => {
      process.stdin.unpipe(sock);
      process.stdin.pause();
      process.stdout.end(() => resolve());
    });
  });
}
