/**
 * `oncely/nats`: an idempotent NATS JetStream consumer on your own `Consumer`
 * (`js.consumers.get(stream, name)`). Each delivery goes through the message protocol
 * (../protocol.ts), which decides; this file only reads the delivery and settles it once:
 * `ack()`, `nak(delayMs)` (a retry) or `term()` (a dead-letter), keeping the message's AckWait
 * alive with `working()` while the handler runs.
 */
import type { Consumer, ConsumerInfo, JetStreamClient, JsMsg } from '@nats-io/jetstream';
import type { MsgHdrs } from '@nats-io/transport-node';
import { InvalidOptionError } from '../../core/errors.js';
import { describeValue } from '../../core/store-kit.js';
import { checkHandler, createMessageProtocol, type ConsumerOptions, type MessageAction, type MessageHandler } from '../protocol.js';

export type { ConsumerOptions, DeadLetterReason, MessageContext, MessageEvent, MessageHandler } from '../protocol.js';

export interface NatsConsumerOptions extends ConsumerOptions<JsMsg> {
  /** Messages handled at once; also how many are pulled ahead (`max_messages`). Default 1. */
  concurrency?: number;
  /**
   * Dead-letter a message without a `Nats-Msg-Id` header (reason `'no-identity'`) instead of
   * identifying it by its stream sequence. The sequence only recognises redeliveries of one
   * stored message, not one operation published twice. Default `false`.
   */
  requireMsgId?: boolean;
  /**
   * Also publish each dead-lettered message to `subject` (through `jetstream`, so a stream that
   * captures it stores it before the original is terminated), with its headers and
   * `Oncely-Dead-Letter-Reason`, `-Detail`, `-Stream`, `-Sequence`, `-Subject`, `-Msg-Id`. A failed publish
   * terminates nothing: the message is handed back (`nak`) after `backoff.maxMs`.
   * Default: none, the message is only terminated (the server's `MSG_TERMINATED` advisory).
   */
  deadLetter?: { jetstream: JetStreamClient; subject: string };
}

export interface NatsConsumer {
  /**
   * Stops pulling messages, hands back (`nak`) those pulled but not started, and resolves when
   * every running handler has finished and its delivery is settled. Nothing is acked after it
   * resolves. It leaves the connection open: the connection is yours.
   */
  close(): Promise<void>;
}

const OWNER = 'consumeIdempotently()';
/** NATS headers are single lines; the reason is for people, so a long one is cut. */
const headerText = (text: string) => text.replace(/\s+/g, ' ').slice(0, 1_000);

/**
 * Consumes `consumer` (a pull consumer with `ack_policy: explicit`) and runs `handler` at most
 * once per message identity, whatever the number of deliveries.
 *
 * - Identity: the `Nats-Msg-Id` header, else the stream sequence (`seq:<n>`), or `key(message)`.
 *   The sequence dedupes redeliveries only: a message published twice without `Nats-Msg-Id`
 *   has two sequences and runs twice (set `requireMsgId` to refuse such messages). A stream
 *   deleted and made again restarts its sequence: use a new `namespace` then.
 * - Namespace: `<stream>/<consumer>`, so every durable consumer of a stream (fan-out) handles
 *   each message once, and processes sharing one durable compete.
 * - Hold: `working()` with every lease heartbeat (every `leaseMs / 3`), so a handler may run
 *   longer than AckWait; AckWait must be at least `leaseMs / 2` (checked here).
 * - Attempts: `info.deliveryCount`. The consumer's `max_deliver` must be unlimited (-1) or
 *   ≥ `maxAttempts` (checked here), or JetStream stops redelivering before oncely dead-letters.
 * - Dead-letter: `term()` (with the reason on nats-server ≥ 2.11); the server publishes
 *   `$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.<stream>.<consumer>` with the stream sequence.
 *   `deadLetter` also keeps a copy with the reason in its headers.
 *
 * @example
 * ```ts
 * const js = jetstream(nc);
 * const consumer = await consumeIdempotently(await js.consumers.get('ORDERS', 'emails'), async (msg, { downstreamKey }) => {
 *   await mailer.send(msg.json(), { idempotencyKey: downstreamKey });
 * }, { store: new RedisStore({ client: redis }), deadLetter: { jetstream: js, subject: 'dead.orders' } });
 * process.on('SIGTERM', () => void consumer.close().then(() => nc.drain()));
 * ```
 */
export const consumeIdempotently = (consumer: Consumer, handler: MessageHandler<JsMsg>, options: NatsConsumerOptions): Promise<NatsConsumer> => {
  const client = consumer as Partial<Consumer> | null;
  if (typeof client !== 'object' || client === null || typeof client.consume !== 'function' || typeof client.info !== 'function') {
    throw new InvalidOptionError(`${OWNER}: \`consumer\` must be a JetStream Consumer (await js.consumers.get(stream, name)), got ${describeValue(consumer)}`, 'consumer');
  }
  checkHandler(OWNER, handler);
  const { deliver, settings, read } = createMessageProtocol(options, OWNER, ['concurrency', 'requireMsgId', 'deadLetter']);
  const concurrency = read.count('concurrency', 1);
  const requireMsgId = read.boolean('requireMsgId', false);
  const deadLetter = read.raw('deadLetter') as NatsConsumerOptions['deadLetter'];
  if (deadLetter !== undefined && (typeof deadLetter?.jetstream?.publish !== 'function' || typeof deadLetter.subject !== 'string' || deadLetter.subject === '')) {
    read.invalid('deadLetter', '{ jetstream: a JetStreamClient (jetstream(nc)), subject: a non-empty subject }');
  }

  /** The one settlement of a delivery. A failure (connection closed) leaves it to AckWait: the redelivery finds its stored outcome. */
  const settle = (send: () => void) => {
    try {
      send();
    } catch {
      // The server redelivers the message after AckWait.
    }
  };

  const start = async (): Promise<NatsConsumer> => {
    const info = await consumer.info(true);
    checkConsumer(info, settings.leaseMs, settings.maxAttempts);
    // term(reason) is "+TERM <reason>": a server before 2.11 does not take it as a term at all.
    const version = (consumer as { api?: { nc?: { info?: { version?: string } } } }).api?.nc?.info?.version ?? '';
    const [major = 0, minor = 0] = version.split('.').map(Number);
    const termTakesReason = major > 2 || (major === 2 && minor >= 11);
    const makeHeaders = deadLetter ? (await import('@nats-io/transport-node')).headers : undefined;

    const moveAside = async (msg: JsMsg, action: Extract<MessageAction, { action: 'dead-letter' }>) => {
      if (deadLetter && makeHeaders) {
        try {
          await deadLetter.jetstream.publish(deadLetter.subject, msg.data, { headers: deadLetterHeaders(makeHeaders(), msg, action) });
        } catch {
          return settle(() => msg.nak(settings.backoff.maxMs));
        }
      }
      settle(() => (termTakesReason ? msg.term(headerText(`${action.reason}: ${action.detail}`)) : msg.term()));
    };

    const handle = async (msg: JsMsg) => {
      const { stream, consumer: name, streamSequence, deliveryCount } = msg.info;
      const msgId = msg.headers?.get('Nats-Msg-Id');
      const id = msgId || (requireMsgId ? undefined : `seq:${streamSequence}`);
      const action = await deliver(msg, { id, body: msg.data, attempt: deliveryCount, source: `${stream}/${name}`, extendHold: () => msg.working() }, handler);
      if (action.action === 'ack') settle(() => msg.ack());
      else if (action.action === 'retry') settle(() => msg.nak(action.delayMs));
      else await moveAside(msg, action);
    };

    const messages = await consumer.consume({ max_messages: concurrency });
    let closing: Promise<void> | undefined;
    const running = new Set<Promise<void>>();
    const loop = (async () => {
      try {
        for await (const msg of messages) {
          if (closing !== undefined) {
            settle(() => msg.nak());
            continue;
          }
          // deliver() never throws; a delivery that cannot even be read comes back after backoff.maxMs.
          const task = handle(msg)
            .catch(() => settle(() => msg.nak(settings.backoff.maxMs)))
            .finally(() => running.delete(task));
          running.add(task);
          if (running.size >= concurrency) await Promise.race(running);
        }
      } catch {
        // The iterator failed (connection closed, consumer deleted): unsettled messages come back after AckWait.
      }
    })();
    const stop = async () => {
      await messages.close().catch(() => undefined);
      await loop;
      while (running.size > 0) await Promise.allSettled([...running]);
    };
    return { close: () => (closing ??= stop()) };
  };
  return start();
};

function checkConsumer(info: ConsumerInfo, leaseMs: number, maxAttempts: number) {
  const { ack_policy: ackPolicy, ack_wait: ackWait, max_deliver: maxDeliver } = info.config;
  if (ackPolicy !== 'explicit') {
    throw new InvalidOptionError(`${OWNER}: \`consumer\` must have ack_policy 'explicit' (each message settled on its own), got '${ackPolicy}'`, 'consumer');
  }
  const ackWaitMs = (ackWait ?? 30e9) / 1e6;
  if (ackWaitMs < leaseMs / 2) {
    throw new InvalidOptionError(`${OWNER}: \`leaseMs\` (${leaseMs}) must be at most twice the consumer's AckWait (${ackWaitMs} ms): the hold is renewed every leaseMs / 3`, 'leaseMs');
  }
  if (maxDeliver !== undefined && maxDeliver > 0 && maxDeliver < maxAttempts) {
    throw new InvalidOptionError(`${OWNER}: \`maxAttempts\` (${maxAttempts}) is above the consumer's max_deliver (${maxDeliver}): JetStream would stop redelivering before oncely dead-letters; set max_deliver to -1`, 'maxAttempts');
  }
}

function deadLetterHeaders(headers: MsgHdrs, msg: JsMsg, action: Extract<MessageAction, { action: 'dead-letter' }>): MsgHdrs {
  for (const name of msg.headers?.keys() ?? []) {
    // Nats-* headers steer the publish (expected stream, TTL, rollup…): not copied.
    if (!/^nats-/i.test(name)) for (const value of msg.headers!.values(name)) headers.append(name, value);
  }
  const { stream, consumer, streamSequence } = msg.info;
  // Publishing the copy again (a crash before term()) is deduplicated within the stream's window.
  headers.set('Nats-Msg-Id', `${stream}/${consumer}/${streamSequence}`);
  headers.set('Oncely-Dead-Letter-Reason', action.reason);
  headers.set('Oncely-Dead-Letter-Detail', headerText(action.detail));
  headers.set('Oncely-Dead-Letter-Stream', stream);
  headers.set('Oncely-Dead-Letter-Sequence', String(streamSequence));
  headers.set('Oncely-Dead-Letter-Subject', msg.subject);
  const msgId = msg.headers?.get('Nats-Msg-Id');
  if (msgId) headers.set('Oncely-Dead-Letter-Msg-Id', msgId);
  return headers;
}
