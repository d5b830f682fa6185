/** One colour policy for every `oncely` command. */
import pc from 'picocolors';

/** Whether to colour what goes to `stream`: never with --no-color or NO_COLOR, always with FORCE_COLOR, else on a terminal. */
export function useColor(stream: { isTTY?: boolean }, flag: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  if (!flag || (env.NO_COLOR !== undefined && env.NO_COLOR !== '')) return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0') return true;
  return stream.isTTY === true && env.TERM !== 'dumb';
}

export type Colors = ReturnType<typeof pc.createColors>;

/** Colours for `stream`, or plain text, by `useColor`. */
export function colorsFor(stream: { isTTY?: boolean }, flag: boolean): Colors {
  return pc.createColors(useColor(stream, flag));
}
