/**
 * The documented at-least-once case, across processes on a real Mosquitto and a SqliteStore: a
 * consumer SIGKILLed after its side effect and before its PUBACK. The broker resends the message
 * when another process resumes the persistent session (same clientId, clean: false); that
 * process waits out the dead one's lease, runs the effect exactly once more with the same
 * downstreamKey, and acknowledges it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SqliteStore } from '../../stores/sqlite/index.js';
import type { MessageEvent } from '../protocol.js';
import { consumeIdempotently } from './index.js';
import { cleanUp, consumerClient, endClient, leftInSession, mqttSkip, publish, unique, until } from './test-broker.js';

const CHILD = fileURLToPath(new URL('./crash-consumer.ts', import.meta.url));
const skip = await mqttSkip();
const directory = mkdtempSync(join(tmpdir(), 'oncely-mqtt-crash-'));
after(async () => {
  await cleanUp();
  rmSync(directory, { recursive: true, force: true });
});

describe('oncely/mqtt: a consumer process killed between its effect and its PUBACK', { skip }, () => {
  it('is resent to the next process on the session, which repeats the effect once with the same downstreamKey', async () => {
    const topic = unique('crash');
    const clientId = unique('crash').replace(/\//g, '-');
    const database = join(directory, 'records.db');
    const effects = join(directory, 'effects.txt');
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, clientId, topic, database, effects], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    try {
      await until('the child consumer subscribed', () => output.includes('ready'), 10_000);
      await publish(topic, 'send welcome email to user 42', 'welcome-42');
      await until('the side effect', () => output.includes('effect'));
      child.kill('SIGKILL');
      await exited;
    } finally {
      child.kill('SIGKILL');
    }

    const events: MessageEvent[] = [];
    const store = new SqliteStore({ path: database });
    const client = consumerClient(clientId);
    const consumer = consumeIdempotently(
      client,
      topic,
      (_message, { downstreamKey }) => appendFileSync(effects, `${process.pid} ${downstreamKey}\n`),
      { store, leaseMs: 1500, deadLetterTopic: `${topic}/dead`, observer: (event) => events.push(event) },
    );
    await until('the resent message processed', () => events.some((event) => event.type === 'processed'), 8000);
    await consumer.close();
    await endClient(client);

    const lines = readFileSync(effects, 'utf8').trim().split('\n').map((line) => line.split(' '));
    assert.equal(lines.length, 2, 'the effect ran in the killed process and once more, not more');
    assert.deepEqual(lines.map(([pid]) => pid), [String(child.pid), String(process.pid)]);
    assert.equal(lines[0]![1], lines[1]![1], 'the same downstreamKey both times');
    assert.equal(events[0]!.type, 'in_progress', "the resent message first met the dead process's lease");
    assert.equal(events[0]!.attempt, 2, 'a broker redelivery (DUP)');
    assert.deepEqual(await leftInSession(clientId), [], 'acknowledged after the second run');
  });
});
