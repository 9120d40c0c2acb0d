/** `berth ui`: serves the live topology page of the daemon this CLI talks to. */
import type { Command } from 'commander';
import { TopologySource } from '../../ui/source.js';
import { UiServer, parseUiAddr } from '../../ui/server.js';
import { CliExit, command, type CliContext } from '../context.js';

export function uiCommand(ctx: CliContext): Command {
  return command('ui', 'Serve a live, read-only page of hosts, networks and containers on 127.0.0.1')
    .option('--addr <host:port>', 'loopback address to serve on; port 0 picks a free one', '127.0.0.1:0')
    .addHelpText('after', `
The page is read-only and updates itself from the daemon's event stream. It needs the random token
in the printed URL (a request without it gets 403). Only loopback addresses are accepted: from
another machine, forward the port with ssh -L. Stop with Ctrl-C.`)
    .action(async (opts: { addr: string }) => {
      try {
        parseUiAddr(opts.addr);
      } catch (e) {
        throw new CliExit((e as Error).message, 125);
      }
      const client = ctx.client();
      const source = new TopologySource(client);
      await source.start();
      const server = new UiServer(source);
      let url: string;
      try {
        url = await server.listen(opts.addr);
      } catch (e) {
        source.close();
        throw e;
      }
      process.stderr.write(`berth ui: the topology of ${client.host} is served at (Ctrl-C to stop):\n`);
      process.stdout.write(`${url}\n`);
      source.on('status', (s) => process.stderr.write(s.connected ? 'berth ui: daemon reachable again\n' : `berth ui: lost the daemon (${s.error}); retrying\n`));
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      source.close();
      await server.close();
    });
}
