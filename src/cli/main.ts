/**
 * The `oncely` command: `check` tests any HTTP API's idempotency from the outside; `inspect`,
 * `release`, `purge` and `stats` look after a store.
 */
import { Command } from 'commander';
import packageJson from '../../package.json' with { type: 'json' };
import { registerCheckCommand } from './check/command.js';
import { registerStoreCommands } from './store-commands.js';

const program = new Command('oncely')
  .description('Idempotency tools: check any API\'s Idempotency-Key handling, and operate an oncely store.')
  .version(packageJson.version)
  .showHelpAfterError()
  // Usage errors exit 2, like every other input problem; 1 is kept for "the check failed".
  .exitOverride((error) => {
    process.exit(error.exitCode === 1 ? 2 : error.exitCode);
  });

registerCheckCommand(program);
registerStoreCommands(program);

await program.parseAsync(process.argv);
