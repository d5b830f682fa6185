/**
 * `oncely/messages`: idempotent message consumers. Broker adapters live in their own subpaths
 * (`oncely/rabbitmq`, `oncely/nats`, `oncely/bullmq`, `oncely/sqs`); this entry is the
 * protocol they share, for any other broker (Kafka, Service Bus, …): hand each delivery to
 * `consumer.deliver(message, facts, handler)` and do what the returned action says, once.
 *
 * @example
 * ```ts
 * const consumer = idempotentConsumer<KafkaMessage>({ store, key: (m) => m.headers!.eventId!.toString() });
 * const action = await consumer.deliver(message, { id: undefined, body: message.value!, attempt: undefined, source: topic }, handle);
 * if (action.action === 'ack') await commitOffset(message);
 * ```
 */
import { createMessageProtocol, type ConsumerOptions, type MessageProtocol } from './protocol.js';

export type { ConsumerOptions, DeliveryFacts, MessageAction, MessageEvent, MessageHandler, MessageContext, DeadLetterReason } from './protocol.js';

/** A broker-neutral idempotent consumer; options are checked here, once. */
export const idempotentConsumer = <M>(options: ConsumerOptions<M>): Pick<MessageProtocol<M>, 'deliver'> => {
  const { deliver } = createMessageProtocol(options, 'idempotentConsumer()');
  return { deliver };
};
