/**
 * What the crash examples share: a narration with the time since the example started, consumer
 * processes started with `node --import tsx` that report one JSON line per thing worth telling
 * (the parent tells each as it comes), and both ends of that: `startChild` in the example,
 * `childSide` in the consumer process. Children still running when the example ends are killed
 * by `killChildren`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

/** One JSON line from a child consumer: who said it, what happened, and the details. */
export interface ChildLine {
  worker: string;
  event: string;
  [field: string]: unknown;
}

const started = performance.now();

/** Seconds since the example started, as " 1.5 s". */
export const elapsed = () => `${((performance.now() - started) / 1_000).toFixed(1).padStart(4)} s`;

/** Prints one line of the story, after the time it happened. */
export const tell = (text: string) => console.log(`${elapsed()}  ${text}`);

/** The last line: ok and how long the run took, or FAILED; exit code 1 unless ok. */
export function conclude(ok: boolean, what: string): void {
  console.log(ok ? `\nok: ${what} (${elapsed().trim()})` : '\nFAILED: the counts above are not what oncely promises');
  if (!ok) process.exitCode = 1;
}

/** An error ends the example: FAILED, exit code 1. */
export function fail(error: unknown): void {
  console.error('FAILED:', error);
  process.exitCode = 1;
}

/** Polls `check` every 100 ms until it holds; throws after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const children = new Set<ChildProcess>();

/** A running child consumer. */
export interface Child {
  readonly process: ChildProcess;
  /** The first line with this event, said already or still to come. */
  line(event: string): Promise<ChildLine>;
  /** SIGKILL, as a crash: resolves once the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM: the child closes its consumer and exits; resolves then. */
  stop(): Promise<void>;
}

export interface ChildOptions {
  /** How the story calls it: "worker 1". The child gets it as an argument too, and says it in every line. */
  name: string;
  /** The consumer's .ts file. */
  file: string;
  /** Its arguments. */
  args: string[];
  /** What it is there for, told when it is ready: "handles messages". */
  role?: string;
  /** How the story tells each of its lines but `ready`. */
  describe: (line: ChildLine) => string;
}

/** Starts a child consumer; resolves once it says `ready` (it consumes). Its lines are told as they come. */
export async function startChild({ name, file, args, role, describe }: ChildOptions): Promise<Child> {
  const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const said: ChildLine[] = [];
  const waiting: { event: string; resolve: (line: ChildLine) => void }[] = [];
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  let pending = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const text of lines.filter(Boolean)) {
      const line = JSON.parse(text) as ChildLine;
      if (line.event === 'ready') {
        tell(`${name}: started (pid ${String(line.pid)}${role ? `, ${role}` : ''})`);
        ready();
      } else tell(`${name}: ${describe(line)}`);
      said.push(line);
      for (const waiter of waiting.filter((waiter) => waiter.event === line.event)) {
        waiting.splice(waiting.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  await Promise.race([isReady, once(child, 'exit').then(() => Promise.reject(new Error(`${name} exited before it was ready`)))]);
  return {
    process: child,
    line: (event) => {
      const earlier = said.find((line) => line.event === event);
      return earlier ? Promise.resolve(earlier) : new Promise((resolve) => waiting.push({ event, resolve }));
    },
    kill: async () => {
      child.kill('SIGKILL');
      await once(child, 'exit');
    },
    stop: async () => {
      const stopped = once(child, 'exit');
      child.kill('SIGTERM');
      await stopped;
    },
  };
}

/** Kills every child consumer still running (when the example ends, however it ends). */
export function killChildren(): void {
  for (const child of children) child.kill('SIGKILL');
}

/** The child's end: its lines to the parent, and how it stops. */
export function childSide(name: string) {
  const say = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ worker: name, ...line })}\n`);
  return {
    /** Writes one JSON line for the parent, with this child's name. */
    say,
    /** Never resolves: the handler stops here, before its outcome is stored and acked, until the parent SIGKILLs it. */
    hang: () => new Promise<never>(() => setInterval(() => undefined, 1_000)),
    /** Says `ready`; on SIGTERM, closes these one after the other (the consumer first) and exits 0. */
    ready(...closing: { close(): unknown }[]): void {
      process.once('SIGTERM', () => {
        void (async () => {
          for (const resource of closing) await resource.close();
          process.exit(0);
        })();
      });
      say({ event: 'ready', pid: process.pid });
    },
  };
}
