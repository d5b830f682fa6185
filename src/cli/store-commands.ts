/**
 * Operator commands on a store given by URL: `inspect`, `release`, `purge --expired`, `stats`.
 *
 * Exit codes: 0 done; 1 nothing matched (no record, nothing to release, release declined);
 * 2 bad input, a missing driver, or a store that cannot be reached.
 */
import { createInterface } from 'node:readline/promises';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { identityId } from '../core/identity.js';
import { sweepExpired } from '../core/sweep.js';
import type { IdempotencyRecord } from '../core/types.js';
import { CliError } from './cli-error.js';
import { colorsFor } from './color.js';
import { openStore, type OpenedStore, type StoreLocation } from './open-store.js';
import { duration, formatRecord, formatStats, recordView } from './record-view.js';

interface StoreFlags extends Omit<StoreLocation, 'url'> {
  store: string;
  json?: boolean;
  color: boolean;
}

interface RecordFlags extends StoreFlags {
  namespace?: string;
  scope?: string;
  id?: string;
  limit: number;
}

const EXIT_NOTHING = 1;
const EXIT_USAGE = 2;

/** Commander reports an InvalidArgumentError from a parser as a usage error (exit 2). */
function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed <= 0) throw new InvalidArgumentError('It must be a positive whole number.');
  return parsed;
}

function withStoreOptions(command: Command): Command {
  return command
    .addOption(new Option('--store <url>', 'the store: sqlite:<path>, postgres://… or redis://…').env('ONCELY_STORE').makeOptionMandatory())
    .option('--table <name>', 'table of records (SQLite, PostgreSQL)', 'oncely_records')
    .option('--schema <name>', 'PostgreSQL schema', 'public')
    .option('--prefix <prefix>', 'Redis key prefix', 'oncely')
    .option('--json', 'print JSON instead of text')
    .option('--no-color', 'no colours (NO_COLOR is respected too)');
}

function withRecordOptions(command: Command): Command {
  return withStoreOptions(command)
    .option('--namespace <namespace>', 'only records of this namespace (HTTP middleware default: http)')
    .option('--scope <scope>', 'only records of this scope (tenant, user, credential hash)')
    .option('--id <sha256>', 'the record id itself, instead of looking the key up')
    .option('--limit <n>', 'most records listed', positiveInteger, 20);
}

/** Opens the store, runs `work`, closes the store, and turns failures into exit codes. */
async function run(flags: StoreFlags, work: (opened: OpenedStore) => Promise<number>): Promise<void> {
  let opened: OpenedStore | undefined;
  try {
    opened = await openStore({ url: flags.store, table: flags.table, schema: flags.schema, prefix: flags.prefix });
    process.exitCode = await work(opened);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const known = error instanceof CliError || (error as { code?: unknown }).code !== undefined;
    if (flags.json) process.stdout.write(`${JSON.stringify({ error: message })}\n`);
    else process.stderr.write(`${colorsFor(process.stderr, flags.color).red('oncely:')} ${message}\n`);
    if (!known && error instanceof Error && error.stack) process.stderr.write(`${error.stack}\n`);
    process.exitCode = EXIT_USAGE;
  } finally {
    await opened?.close().catch(() => undefined);
  }
}

/** The records a key names: by id, by full identity, or by a scan of the stored keys. */
async function findRecords(opened: OpenedStore, key: string | undefined, flags: RecordFlags): Promise<IdempotencyRecord[]> {
  const { store } = opened;
  if (flags.id !== undefined) {
    if (!/^[0-9a-f]{64}$/.test(flags.id)) throw new CliError('--id must be a SHA-256 hex digest (64 characters 0-9a-f)');
    const record = await store.get(flags.id);
    return record ? [record] : [];
  }
  if (key === undefined) throw new CliError('give a key, or --id');
  if (flags.namespace !== undefined && flags.scope !== undefined) {
    const record = await store.get(identityId(flags.namespace, flags.scope, key));
    return record ? [record] : [];
  }
  return store.findByKey({ key, ...(flags.namespace !== undefined ? { namespace: flags.namespace } : {}), ...(flags.scope !== undefined ? { scope: flags.scope } : {}), limit: flags.limit });
}

function notFound(key: string | undefined, flags: RecordFlags, where: string): string {
  const what = flags.id !== undefined ? `id ${flags.id}` : `key ${JSON.stringify(key)}${flags.namespace !== undefined ? ` in namespace ${flags.namespace}` : ''}${flags.scope !== undefined ? ` for scope ${flags.scope}` : ''}`;
  return `no live record for ${what} in ${where}`;
}

async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) throw new CliError('release needs a confirmation: pass --yes (there is no terminal to ask on)');
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await prompt.question(`${question} [y/N] `)).trim());
  } finally {
    prompt.close();
  }
}

export function registerStoreCommands(program: Command): void {
  withRecordOptions(program.command('inspect').argument('[key]', 'the Idempotency-Key (or idempotent() key) as the client sent it'))
    .description('show the records of a key: state, age, lease, fingerprint, stored status')
    .action((key: string | undefined, flags: RecordFlags) => run(flags, async (opened) => {
      const records = await findRecords(opened, key, flags);
      const views = records.map((record) => recordView(record));
      if (flags.json) process.stdout.write(`${JSON.stringify({ store: opened.describe, records: views }, null, 2)}\n`);
      else if (views.length === 0) process.stderr.write(`${notFound(key, flags, opened.describe)}\n`);
      else {
        const colors = colorsFor(process.stdout, flags.color);
        process.stdout.write(`${views.map((view) => formatRecord(view, colors)).join('\n\n')}\n`);
      }
      return views.length > 0 ? 0 : EXIT_NOTHING;
    }));

  withRecordOptions(program.command('release').argument('[key]', 'the key of the stuck claim'))
    .description('force-release a stuck in-progress claim, so the next retry runs the work again')
    .option('-y, --yes', 'do not ask for confirmation')
    .action((key: string | undefined, flags: RecordFlags & { yes?: boolean }) => run(flags, async (opened) => {
      const records = await findRecords(opened, key, flags);
      const claims = records.filter((record) => record.state === 'in_progress');
      const refuse = (message: string): number => {
        if (flags.json) process.stdout.write(`${JSON.stringify({ released: false, reason: message })}\n`);
        else process.stderr.write(`${message}\n`);
        return EXIT_NOTHING;
      };
      if (records.length === 0) return refuse(notFound(key, flags, opened.describe));
      if (claims.length === 0) return refuse('nothing to release: the record is completed, and its stored outcome is what every retry must get');
      if (claims.length > 1) return refuse(`${claims.length} in-progress records have this key; narrow with --namespace and --scope, or --id:\n${claims.map((record) => `  ${record.id}  ${record.meta?.namespace ?? ''} ${record.meta?.scope ?? ''}`).join('\n')}`);
      const claim = claims[0]!;
      const view = recordView(claim);
      if (!flags.yes) {
        if (flags.json) throw new CliError('release with --json needs --yes');
        process.stderr.write(`${formatRecord(view, colorsFor(process.stderr, flags.color))}\n`);
        const question = `Release this claim (held ${duration(view.ageMs)}, lease ends in ${duration(view.expiresInMs)})? If its holder is still running, the work may run twice.`;
        if (!(await confirm(question))) return refuse('not released');
      }
      const released = await opened.store.forceRelease(claim.id);
      if (flags.json) process.stdout.write(`${JSON.stringify({ released, record: view })}\n`);
      else process.stdout.write(released ? `released ${claim.id}; the next retry runs the work\n` : 'not released: the claim completed or lapsed meanwhile\n');
      return released ? 0 : EXIT_NOTHING;
    }));

  withStoreOptions(program.command('purge'))
    .description('remove lapsed records (SQL stores; Redis and memory expire them themselves)')
    .option('--expired', 'remove records whose lease or retention has ended (required: nothing else is ever purged)')
    .option('--batch <n>', 'records removed per statement', positiveInteger, 1000)
    .action((flags: StoreFlags & { expired?: boolean; batch: number }, command: Command) => {
      if (!flags.expired) command.error('purge removes only lapsed records: pass --expired', { exitCode: EXIT_USAGE });
      return run(flags, async (opened) => {
        const removed = await sweepExpired(opened.store, { batchSize: flags.batch });
        if (flags.json) process.stdout.write(`${JSON.stringify({ store: opened.describe, removed })}\n`);
        else process.stdout.write(`removed ${removed} lapsed record${removed === 1 ? '' : 's'} from ${opened.describe}\n`);
        return 0;
      });
    });

  withStoreOptions(program.command('stats'))
    .description('count records by state and show the oldest in-progress claim')
    .action((flags: StoreFlags) => run(flags, async (opened) => {
      const stats = await opened.store.stats();
      if (flags.json) {
        const oldest = stats.oldestInProgressAt === undefined ? {} : { oldestInProgressAt: new Date(stats.oldestInProgressAt).toISOString(), oldestInProgressAgeMs: stats.now - stats.oldestInProgressAt };
        process.stdout.write(`${JSON.stringify({ store: opened.describe, inProgress: stats.inProgress, completed: stats.completed, lapsed: stats.lapsed, ...oldest })}\n`);
      } else process.stdout.write(`${formatStats(stats, opened.describe, colorsFor(process.stdout, flags.color))}\n`);
      return 0;
    }));
}
