/**
 * The report of `oncely check`: a human one (at most 100 columns, coloured on a terminal) and a
 * JSON one for CI. Both are pure functions of the `CheckReport`.
 */
import pc from 'picocolors';
import type { Colors } from '../color.js';
import { DRAFT } from './expectations.js';
import type { CheckReport, ProbeResult, Verdict } from './types.js';

export const REPORT_WIDTH = 100;
/** Where the text of a probe starts: after ` PASS  3. `. */
const INDENT = 7;
const LABEL_WIDTH = 9;


export interface FormatOptions {
  color: boolean;
}

const VERDICT_COLOR: Record<Verdict, keyof Pick<Colors, 'green' | 'yellow' | 'red' | 'cyan'>> = { pass: 'green', warn: 'yellow', fail: 'red', skip: 'cyan' };

/** ` PASS `, coloured (inverse) when colour is on. */
export function verdictBadge(verdict: Verdict, colors: Colors): string {
  const text = ` ${verdict.toUpperCase()} `;
  const color = colors[VERDICT_COLOR[verdict]];
  return colors.isColorSupported ? colors.bold(colors.inverse(color(text))) : text;
}

/** Greedy word wrap of `text` to `width` columns; continuation lines get `indent` spaces. */
export function wrap(text: string, width: number, indent: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const room = width - (lines.length === 0 ? 0 : indent);
    if (line && line.length + 1 + word.length > room) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line || lines.length === 0) lines.push(line);
  return lines.map((each, index) => (index === 0 ? each : ' '.repeat(indent) + each));
}

/** A labelled block: `server   text…` with its lines wrapped under the text. */
function block(label: string, lines: string[], colors: Colors): string[] {
  const start = INDENT + LABEL_WIDTH;
  const out: string[] = [];
  lines.forEach((text, index) => {
    const [head = '', ...rest] = wrap(text, REPORT_WIDTH - start, 0);
    const prefix = ' '.repeat(INDENT) + (index === 0 ? colors.dim(label.padEnd(LABEL_WIDTH)) : ' '.repeat(LABEL_WIDTH));
    out.push(prefix + head, ...rest.map((more) => ' '.repeat(start) + more));
  });
  return out;
}

function formatProbe(probe: ProbeResult, index: number, colors: Colors): string[] {
  const title = `${verdictBadge(probe.verdict, colors)} ${colors.bold(`${index + 1}. ${probe.title}`)}`;
  return [
    title,
    ...block('server', [probe.observed, ...probe.details], colors),
    ...block('expects', [`${probe.expected} [${probe.source}]`], colors),
  ];
}

/** `3 passed, 1 warning, 1 failed, 1 skipped`. */
export function summaryLine(report: CheckReport): string {
  const { passed, warnings, failed, skipped } = report.summary;
  const parts = [`${passed} passed`, `${warnings} warning${warnings === 1 ? '' : 's'}`, `${failed} failed`];
  if (skipped > 0) parts.push(`${skipped} skipped`);
  return parts.join(', ');
}

const OUTCOME_TEXT: Record<CheckReport['outcome'], string> = {
  pass: 'PASS: the endpoint behaves as the draft asks',
  warn: 'PASS with warnings: no duplicate execution seen',
  fail: 'FAIL: retries are not safe on this endpoint',
  inconclusive: 'INCONCLUSIVE: the endpoint accepted none of the keyed requests',
};

export function formatReport(report: CheckReport, options: FormatOptions): string {
  const colors = pc.createColors(options.color);
  const { target } = report;
  const key = target.keyStyle === 'bare' ? 'bare token' : 'sf-string';
  const lines = [
    colors.bold(`oncely check: ${target.method} ${target.url}`),
    ...wrap(`${target.headerName} as ${key}s, ${target.concurrency} concurrent duplicates; judged against ${DRAFT} and Stripe`, REPORT_WIDTH, 0)
      .map((line) => colors.dim(line)),
    '',
  ];
  report.probes.forEach((probe, index) => lines.push(...formatProbe(probe, index, colors), ''));
  const outcome = OUTCOME_TEXT[report.outcome];
  const color = report.outcome === 'fail' ? colors.red : report.outcome === 'pass' ? colors.green : colors.yellow;
  lines.push(colors.bold(color(outcome)), `${summaryLine(report)}; ${report.summary.executions} executions inferred.`);
  lines.push(...wrap(report.inference, REPORT_WIDTH, 0).map((line) => colors.dim(line)));
  return `${lines.join('\n')}\n`;
}

/** The `--json` document (stable shape, `version: 1`). */
export function toJson(report: CheckReport): string {
  const document = {
    tool: 'oncely check',
    version: 1,
    draft: DRAFT,
    target: report.target,
    outcome: report.outcome,
    exitCode: report.exitCode,
    summary: report.summary,
    probes: report.probes,
    inference: report.inference,
  };
  return `${JSON.stringify(document, null, 2)}\n`;
}
