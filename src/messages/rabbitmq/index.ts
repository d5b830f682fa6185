/**
 * `oncely/rabbitmq`: an idempotent RabbitMQ consumer on your own amqplib channel. Each delivery
 * goes through the message protocol (../protocol.ts), which decides; this file only reads the
 * delivery and settles it once: `ack`, `nack` with requeue (a retry), or `nack` without
 * requeue (the queue's dead-letter exchange).
 */
import type { Channel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import { InvalidOptionError } from '../../core/errors.js';
import { describeValue } from '../../core/store-kit.js';
import { checkHandler, createMessageProtocol, type ConsumerOptions, type DeliveryFacts, type MessageAction, type MessageHandler } from '../protocol.js';

export type { ConsumerOptions, DeadLetterReason, MessageContext, MessageEvent, MessageHandler } from '../protocol.js';

export interface RabbitConsumerOptions extends ConsumerOptions<ConsumeMessage> {
  /**
   * A header that holds the message identity, read instead of `properties.messageId` (a
   * string or a number). Default: none, the identity is `properties.messageId`.
   */
  idHeader?: string;
  /**
   * An exchange that oncely publishes dead letters to: a copy of the message with the headers
   * `x-oncely-dead-letter-reason` (`'max-attempts'`, `'mismatch'`, …) and
   * `x-oncely-dead-letter-detail`, under its routing key. The original is acked once the broker
   * confirms the copy; a copy the broker refuses falls back to the default. Needs a confirm
   * channel (`connection.createConfirmChannel()`). A crash between the confirm and the ack
   * leaves two copies there. Default: none, `nack` without requeue sends the message to the
   * queue's own `x-dead-letter-exchange`.
   */
  deadLetterExchange?: string;
  /** Options for `channel.consume` (`consumerTag`, `exclusive`, `priority`, `arguments`). `noAck` is refused: oncely acks. Default `{}`. */
  consume?: Options.Consume;
}

export interface RabbitConsumer {
  /** The broker's tag of this consumer. */
  readonly consumerTag: string;
  /**
   * Stops taking messages (cancels the consumer), hands back at once the messages waiting to be
   * retried, and resolves when every running handler has finished and its delivery is settled.
   * Nothing is acked after it resolves. It leaves the channel open: the channel is yours.
   */
  close(): Promise<void>;
}

const OWNER = 'consumeIdempotently()';

/**
 * Consumes `queue` on `channel` and runs `handler` at most once per message identity (once per
 * `key(message)` with a `key`), whatever the number of deliveries.
 *
 * - Identity: `properties.messageId`, or the header named by `idHeader`, or `key(message)`. A
 *   message with none is dead-lettered (reason `'no-identity'`), never run.
 * - Settling: a processed message or a duplicate is acked once its outcome is stored. A retry
 *   (handler error, store down, another consumer running the same identity) keeps the message
 *   unacked for the protocol's delay, then nacks it with requeue; if this process dies
 *   meanwhile, the broker redelivers it at once. Messages waiting count against the channel's
 *   prefetch. A dead-letter is `nack` without requeue: declare the queue with an
 *   `x-dead-letter-exchange`, or RabbitMQ drops it. The reason goes to the observer's
 *   `dead_lettered` event; the message itself carries RabbitMQ's `x-death` (reason `rejected`),
 *   or, with `deadLetterExchange`, oncely's reason in `x-oncely-dead-letter-reason`.
 * - Attempts: `x-delivery-count` + 1 on quorum queues; on a classic queue only the first
 *   delivery is known (attempt 1) and a redelivery has no count, so `maxAttempts` applies to
 *   quorum queues only (`isPermanent` applies to both).
 *
 * @example
 * ```ts
 * const channel = await connection.createChannel();
 * await channel.prefetch(10);
 * const consumer = await consumeIdempotently(channel, 'emails', async (message, { downstreamKey }) => {
 *   await mailer.send(JSON.parse(message.content.toString()), { idempotencyKey: downstreamKey });
 * }, { store: new RedisStore({ client: redis }), isPermanent: (error) => error instanceof SyntaxError });
 * process.on('SIGTERM', () => void consumer.close().then(() => connection.close()));
 * ```
 */
export const consumeIdempotently = (channel: Channel, queue: string, handler: MessageHandler<ConsumeMessage>, options: RabbitConsumerOptions): Promise<RabbitConsumer> => {
  const client = channel as Partial<Channel> | null;
  if (typeof client !== 'object' || client === null || typeof client.consume !== 'function' || typeof client.ack !== 'function' || typeof client.nack !== 'function') {
    throw new InvalidOptionError(`${OWNER}: \`channel\` must be an amqplib channel (await connection.createChannel()), got ${describeValue(channel)}`, 'channel');
  }
  if (typeof queue !== 'string' || queue === '') throw new InvalidOptionError(`${OWNER}: \`queue\` must be a non-empty queue name, got ${describeValue(queue)}`, 'queue');
  checkHandler(OWNER, handler);
  const { deliver } = createMessageProtocol(options, OWNER, ['idHeader', 'deadLetterExchange', 'consume']);
  const { idHeader, deadLetterExchange, consume = {} } = options;
  if (idHeader !== undefined && (typeof idHeader !== 'string' || idHeader === '')) {
    throw new InvalidOptionError(`${OWNER}: \`idHeader\` must be a non-empty header name, got ${describeValue(idHeader)}`, 'idHeader');
  }
  if (deadLetterExchange !== undefined && (typeof deadLetterExchange !== 'string' || typeof (channel as Partial<ConfirmChannel>).waitForConfirms !== 'function')) {
    throw new InvalidOptionError(`${OWNER}: \`deadLetterExchange\` must be an exchange name, on a confirm channel (connection.createConfirmChannel()), got ${describeValue(deadLetterExchange)}`, 'deadLetterExchange');
  }
  if (typeof consume !== 'object' || consume === null || consume.noAck === true) {
    throw new InvalidOptionError(`${OWNER}: \`consume\` must be channel.consume options without noAck (oncely acks), got ${describeValue(consume)}`, 'consume');
  }

  let closing: Promise<void> | undefined;
  const running = new Set<Promise<void>>();
  /** Messages kept unacked until their retry delay ends. */
  const waiting = new Map<NodeJS.Timeout, ConsumeMessage>();

  /** The one settlement of a delivery. A channel that closed meanwhile has already handed the message back to the broker. */
  const settle = (message: ConsumeMessage, how: 'ack' | 'requeue' | 'reject') => {
    try {
      if (how === 'ack') channel.ack(message);
      else channel.nack(message, false, how === 'requeue');
    } catch {
      // amqplib throws on a closed channel; the broker redelivers the message, which finds its stored outcome.
    }
  };

  /** Publishes the dead letter with its reason, then acks the original: resolves once it is settled. */
  const publishDeadLetter = (message: ConsumeMessage, exchange: string, reason: string, detail: string) =>
    new Promise<void>((resolve) => {
      // userId must name the publishing connection's user, so it is not copied.
      const { headers, userId: _userId, ...properties } = message.properties;
      const copy = { ...properties, headers: { ...headers, 'x-oncely-dead-letter-reason': reason, 'x-oncely-dead-letter-detail': detail.slice(0, 1_000) } };
      try {
        (channel as ConfirmChannel).publish(exchange, message.fields.routingKey, message.content, copy, (error) => {
          settle(message, error ? 'reject' : 'ack');
          resolve();
        });
      } catch {
        resolve(); // the channel is closed: the broker redelivers the original.
      }
    });

  const perform = (message: ConsumeMessage, decision: MessageAction): void | Promise<void> => {
    if (decision.action === 'ack') return settle(message, 'ack');
    if (decision.action === 'dead-letter') {
      return deadLetterExchange === undefined ? settle(message, 'reject') : publishDeadLetter(message, deadLetterExchange, decision.reason, decision.detail);
    }
    if (closing !== undefined || decision.delayMs === 0) return settle(message, 'requeue');
    const timer = setTimeout(() => {
      waiting.delete(timer);
      settle(message, 'requeue');
    }, decision.delayMs);
    timer.unref();
    waiting.set(timer, message);
  };

  const facts = (message: ConsumeMessage): DeliveryFacts => {
    const headers = message.properties.headers ?? {};
    const raw: unknown = idHeader === undefined ? message.properties.messageId : headers[idHeader];
    const count: unknown = headers['x-delivery-count'];
    return {
      id: typeof raw === 'string' || typeof raw === 'number' ? String(raw) : undefined,
      body: message.content,
      attempt: typeof count === 'number' ? count + 1 : message.fields.redelivered ? undefined : 1,
      source: queue,
    };
  };

  const onMessage = (message: ConsumeMessage | null) => {
    // null: the broker cancelled this consumer (the queue was deleted).
    if (message === null) return;
    if (closing !== undefined) return settle(message, 'requeue');
    const task = deliver(message, facts(message), handler).then((decision) => perform(message, decision));
    running.add(task);
    void task.finally(() => running.delete(task));
  };

  const start = async (): Promise<RabbitConsumer> => {
    const { consumerTag } = await channel.consume(queue, onMessage, { ...consume, noAck: false });
    const stop = async () => {
      try {
        await channel.cancel(consumerTag);
      } catch {
        // The channel is closed: no more deliveries come, and its unacked messages went back to the queue.
      }
      for (const [timer, message] of waiting) {
        clearTimeout(timer);
        settle(message, 'requeue');
      }
      waiting.clear();
      while (running.size > 0) await Promise.allSettled([...running]);
    };
    return { consumerTag, close: () => (closing ??= stop()) };
  };
  return start();
};
