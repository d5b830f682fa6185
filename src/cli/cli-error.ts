/**
 * A failure the CLI reports as its message alone, with exit code 2: bad input, a missing
 * driver, an unreachable store. Anything else is a bug and keeps its stack trace.
 */
export class CliError extends Error {
  override readonly name = 'CliError';
}
