/**
 * Progress on stderr while the probes run (never on stdout, which carries the report). On a
 * terminal: a spinner on the current probe's line, replaced by its verdict when it ends. Elsewhere
 * (CI logs): one plain line as each probe starts.
 */
import pc from 'picocolors';
import type { ProgressHooks } from './probes.js';
import { verdictBadge } from './report.js';

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
}

export function createProgress(stream: ProgressStream, options: { color: boolean }): ProgressHooks & { stop(): void } {
  const colors = pc.createColors(options.color);
  const live = stream.isTTY === true;
  let timer: NodeJS.Timeout | undefined;
  let line = '';
  let started = 0;

  const stop = (): void => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };

  return {
    start(index, total, title) {
      line = `[${index}/${total}] ${title}`;
      started = Date.now();
      if (!live) {
        stream.write(`${line}…\n`);
        return;
      }
      let frame = 0;
      const draw = (): void => void stream.write(`\r\x1b[2K${colors.cyan(FRAMES[frame++ % FRAMES.length]!)} ${line}…`);
      draw();
      timer = setInterval(draw, 80);
      timer.unref();
    },
    end(result) {
      if (!live) return;
      stop();
      stream.write(`\r\x1b[2K${verdictBadge(result.verdict, colors)} ${line} ${colors.dim(`(${Date.now() - started} ms)`)}\n`);
    },
    stop,
  };
}
