#!/usr/bin/env node
/**
 * berth: the command line, speaking docker's syntax to berthd's Engine API. Commands exist at the
 * top level (`berth ps`) and in their management groups (`berth container ls`) as in docker.
 */
import { Command, CommanderError } from 'commander';
import { Client, ConnectError, resolveHost } from './client.js';
import { containerCommands } from './commands/containers.js';
import { imageCommands } from './commands/images.js';
import { networkCommands } from './commands/networks.js';
import { serviceCommands } from './commands/service.js';
import { swarmCommands } from './commands/swarm.js';
import { systemCommands } from './commands/system.js';
import { uiCommand } from './commands/ui.js';
import { volumeCommands } from './commands/volumes.js';
import { CliExit, command, describeError, type CliContext } from './context.js';
import { FormatError } from './format/formatter.js';
import { VERSION } from '../daemon/paths.js';

function buildProgram(): Command {
  const program = new Command('berth')
    .description('A container engine whose heart is container networking (docker-compatible CLI)')
    .version(`berth version ${VERSION}`, '-v, --version', 'Print version information and quit')
    .helpOption('--help', 'Print usage')
    .option('-H, --host <socket>', 'Daemon to connect to: unix:///path, tcp://host:port or ssh://[user@]host[:port] (default: $BERTH_HOST, $DOCKER_HOST, unix:///run/berth/berth.sock)')
    .option('-D, --debug', 'Enable debug mode')
    .enablePositionalOptions()
    .showSuggestionAfterError()
    .exitOverride();
  let client: Client | undefined;
  const ctx: CliContext = {
    client: () => (client ??= new Client(resolveHost(program.opts<{ host?: string }>().host))),
  };

  containerCommands(program, ctx, false);
  imageCommands(program, ctx, false);
  networkCommands(program, ctx);
  volumeCommands(program, ctx);
  systemCommands(program, ctx);
  swarmCommands(program, ctx);
  serviceCommands(program, ctx);
  program.addCommand(uiCommand(ctx));

  const container = command('container', 'Manage containers');
  containerCommands(container, ctx, true);
  program.addCommand(container);
  const image = command('image', 'Manage images');
  imageCommands(image, ctx, true);
  program.addCommand(image);

  // Every subcommand reports usage errors through the same exit path as the program.
  const harden = (c: Command) => {
    c.exitOverride();
    c.configureOutput({ writeErr: (s) => process.stderr.write(s) });
    c.commands.forEach(harden);
  };
  harden(program);
  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version print themselves and exit 0; usage errors are docker's 125-ish "bad flag" status
      if (['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(e.code)) return 0;
      if (e.code === 'commander.executeSubCommandAsync') return e.exitCode;
      return e.exitCode === 0 ? 0 : 125;
    }
    if (e instanceof CliExit) {
      if (e.message) process.stderr.write(`${e.message}\n`);
      return e.code;
    }
    if (e instanceof FormatError || e instanceof ConnectError) {
      process.stderr.write(`${e.message}\n`);
      return 1;
    }
    process.stderr.write(`${describeError(e)}\n`);
    if (program.opts<{ debug?: boolean }>().debug && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
// stdin listeners (attach, exec) would keep the process alive; flush and leave.
process.stdout.write('', () => process.exit(code));
