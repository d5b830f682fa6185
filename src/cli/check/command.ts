/**
 * `oncely check <url>`: a black-box check of how any HTTP endpoint, written in any language,
 * handles the `Idempotency-Key` header (IETF httpapi draft "The Idempotency-Key HTTP Header
 * Field", Stripe where the draft is silent). Exit codes: 0 no failure (warnings allowed), 1 a
 * probe failed, 2 a usage error, an unreachable URL, or nothing could be checked.
 */
import { type Command, Option } from 'commander';
import { CliError } from '../cli-error.js';
import { useColor } from '../color.js';
import { parseConfig, type RawOptions } from './config.js';
import { runCheck, UnreachableError } from './probes.js';
import { createProgress } from './progress.js';
import { formatReport, toJson } from './report.js';

interface CommandOptions extends RawOptions {
  json?: boolean;
  quiet?: boolean;
  color: boolean;
}

/** Like every input problem of the `oncely` command (main.ts maps commander's own errors to 2 too). */
const USAGE_EXIT = 2;

const HELP_AFTER = `
Probes (each with fresh keys): a request without a key; malformed keys; the same request twice
(replay fidelity); the same key with another body; --concurrency duplicates at once; a retry
sent while the first request is in flight.

Exit codes:
  0  no probe failed (warnings allowed)
  1  a probe failed: a duplicate execution, a replay that differs, or a reused key not refused
  2  usage error, unreachable URL, or the endpoint accepted none of the keyed requests

Examples:
  $ oncely check http://localhost:3000/orders
  $ oncely check https://api.example.com/v1/charges -H 'Authorization: Bearer sk_test_123' \\
      -d '{"amount": 100, "currency": "eur"}' -c 20
  $ oncely check http://localhost:3000/orders --json > report.json`;

export function registerCheckCommand(program: Command): void {
  program
    .command('check')
    .summary("check any HTTP endpoint's Idempotency-Key handling (black box)")
    .description("Send probes to any HTTP endpoint and report how it handles the Idempotency-Key header, judged " +
      'against the IETF httpapi draft and Stripe: PASS, WARN or FAIL per behaviour.')
    .argument('<url>', 'the endpoint to check, e.g. http://localhost:3000/orders')
    .addOption(new Option('-X, --method <method>', 'HTTP method').default('POST'))
    .option('-d, --data <body>', 'request body, or @file to read it from a file (default: {"oncely_check":"<random>"}, new per probe)')
    .option('--other-data <body>', 'body for "same key, other body", or @file (default: derived from the body)')
    .option('-H, --header <header>', "header sent with every request, 'Name: value' (repeatable; e.g. auth)", (value: string, all: string[] = []) => [...all, value])
    .addOption(new Option('-c, --concurrency <n>', 'duplicates sent at once with one key (2 to 1000)').default('10', '10'))
    .addOption(new Option('--timeout <ms>', 'timeout of each request, in milliseconds').default('10000', '10000'))
    .addOption(new Option('--header-name <name>', 'the idempotency key header').default('Idempotency-Key'))
    .addOption(new Option('--key-style <style>', 'send keys as sf-strings ("…", the draft) or bare tokens (as most APIs show)').choices(['quoted', 'bare']).default('quoted'))
    .option('--json', 'print the report as JSON on stdout (progress stays on stderr)')
    .option('-q, --quiet', 'no progress on stderr')
    .option('--no-color', 'no colours (NO_COLOR is respected too)')
    .showHelpAfterError('(add --help for the options)')
    .addHelpText('after', HELP_AFTER)
    .action(async (target: string, options: CommandOptions, command: Command) => {
      let config: ReturnType<typeof parseConfig>;
      try {
        config = parseConfig(target, options);
      } catch (error) {
        if (error instanceof CliError) command.error(`error: ${error.message}`, { exitCode: USAGE_EXIT, code: 'oncely.usage' });
        throw error;
      }
      const progress = options.quiet ? undefined : createProgress(process.stderr, { color: useColor(process.stderr, options.color) });
      try {
        const report = await runCheck(config, progress);
        const color = !options.json && useColor(process.stdout, options.color);
        process.stdout.write(options.json ? toJson(report) : formatReport(report, { color }));
        if (report.outcome === 'inconclusive') {
          process.stderr.write('error: the endpoint accepted none of the keyed requests, so nothing could be checked; see the report.\n');
        }
        process.exitCode = report.exitCode;
      } catch (error) {
        progress?.stop();
        if (!(error instanceof UnreachableError)) throw error;
        process.stderr.write(`\nerror: ${error.message}\n`);
        process.exitCode = USAGE_EXIT;
      }
    });
}
