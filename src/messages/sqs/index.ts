/**
 * `oncely/sqs`: idempotent Amazon SQS consumers on the user's `@aws-sdk/client-sqs` v3 client.
 * The protocol (../protocol.ts) decides; this file reads a received `Message` into delivery facts
 * and performs the one action: ack = `DeleteMessage`; retry = `ChangeMessageVisibility(delay)`
 * (the message reappears after it); dead-letter = a copy to `deadLetterQueueUrl` carrying the
 * reason, then `DeleteMessage`, or, without that option, visibility 0 so the queue's redrive
 * policy moves it once its `ApproximateReceiveCount` passes `maxReceiveCount`.
 */
import type * as SqsSdk from '@aws-sdk/client-sqs';
import type { Message, MessageAttributeValue, SQSClient } from '@aws-sdk/client-sqs';
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidOptionError } from '../../core/errors.js';
import type { OptionReader } from '../../core/options.js';
import { describeValue } from '../../core/store-kit.js';
import { checkHandler, createMessageProtocol, type ConsumerOptions, type MessageAction, type MessageHandler } from '../protocol.js';

export type { MessageAction, MessageEvent, MessageHandler, MessageContext, DeadLetterReason } from '../protocol.js';

/** Message attributes a dead-lettered copy carries. */
export const DEAD_LETTER_REASON_ATTRIBUTE = 'oncely-dead-letter-reason';
export const DEAD_LETTER_DETAIL_ATTRIBUTE = 'oncely-dead-letter-detail';

/** What the receive must ask for: the attempt count, the FIFO identity and group. */
export const SYSTEM_ATTRIBUTES = ['ApproximateReceiveCount', 'MessageDeduplicationId', 'MessageGroupId'] as const;

export interface SqsConsumerOptions extends ConsumerOptions<Message> {
  /** Where dead-lettered messages are sent, with the reason in the `oncely-dead-letter-reason` attribute, before the original is deleted. Default: none — the message is made visible at once and the queue's redrive policy moves it (no reason attached). */
  deadLetterQueueUrl?: string;
  /** Visibility each heartbeat (every `leaseMs / 3`) extends the message to; must outlast `leaseMs / 3`. Default 30 s (SQS's default). */
  visibilityTimeoutSeconds?: number;
  /** Told when SQS refuses a call (receive, delete, visibility, dead-letter send); the message then comes back by its visibility timeout. Default: `process.emitWarning`. */
  onError?: (error: unknown, message: Message | undefined) => void;
}

export interface SqsPollOptions extends SqsConsumerOptions {
  /** Messages per receive, run at once (1–10). Default 10. */
  batchSize?: number;
  /** Long-poll wait of each receive, 0–20 s. Default 20. */
  waitTimeSeconds?: number;
}

/** What `handleSqsMessage` did; `brokerError` when SQS refused it (the message then comes back). */
export type SqsDeliveryResult = MessageAction & { brokerError?: unknown };

export type SqsMessageHandler = (client: SQSClient, queueUrl: string, message: Message, handler: MessageHandler<Message>) => Promise<SqsDeliveryResult>;

let sdk: Promise<typeof SqsSdk> | undefined;
// Loaded on first use, so `oncely/sqs` loads without the driver until a message is handled.
const loadSdk = () => (sdk ??= import('@aws-sdk/client-sqs'));

const MAX_VISIBILITY_S = 43_200;
const toSeconds = (ms: number) => Math.min(MAX_VISIBILITY_S, Math.ceil(ms / 1000));

function checkTarget(owner: string, client: unknown, queueUrl: unknown): void {
  if (typeof (client as { send?: unknown } | null)?.send !== 'function') {
    throw new InvalidOptionError(`${owner}: \`client\` must be an SQSClient from @aws-sdk/client-sqs, got ${describeValue(client)}`, 'client');
  }
  if (typeof queueUrl !== 'string' || !/^https?:\/\/[^/]+\/.+/.test(queueUrl)) {
    throw new InvalidOptionError(`${owner}: \`queueUrl\` must be a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>), got ${describeValue(queueUrl)}`, 'queueUrl');
  }
}

function makeHandler(
  options: SqsConsumerOptions,
  owner: string,
  extra: readonly string[] = [],
): { handleSqsMessage: SqsMessageHandler; report: (error: unknown, message: Message | undefined) => void; read: OptionReader } {
  const protocol = createMessageProtocol(options, owner, ['deadLetterQueueUrl', 'visibilityTimeoutSeconds', 'onError', ...extra]);
  const { read } = protocol;
  const deadLetterQueueUrl = options.deadLetterQueueUrl === undefined ? undefined : read.string('deadLetterQueueUrl', '');
  const visibilityS = read.count('visibilityTimeoutSeconds', 30);
  if (visibilityS > MAX_VISIBILITY_S || visibilityS * 1000 <= protocol.settings.leaseMs / 3) read.invalid('visibilityTimeoutSeconds', `whole seconds up to ${MAX_VISIBILITY_S}, longer than leaseMs / 3 (the heartbeat's interval)`);
  const onError = read.function<(error: unknown, message: Message | undefined) => void>('onError') ?? ((error: unknown) => process.emitWarning(`oncely/sqs: SQS refused a call: ${String(error)}`));
  const report = (error: unknown, message: Message | undefined) => {
    try {
      onError(error, message);
    } catch {
      // A failing reporter must not crash the consumer.
    }
  };

  return { handleSqsMessage, report, read };

  async function handleSqsMessage(client: SQSClient, queueUrl: string, message: Message, handler: MessageHandler<Message>): Promise<SqsDeliveryResult> {
    checkTarget(owner, client, queueUrl);
    const sqs = await loadSdk();
    const target = { QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle };
    const visibility = (seconds: number) => client.send(new sqs.ChangeMessageVisibilityCommand({ ...target, VisibilityTimeout: seconds }));
    let holding: Promise<unknown> = Promise.resolve();
    const receives = Number(message.Attributes?.ApproximateReceiveCount);
    const action = await protocol.deliver(
      message,
      {
        id: message.Attributes?.MessageDeduplicationId ?? message.MessageId,
        body: Buffer.from(message.Body ?? '', 'utf8'),
        attempt: Number.isSafeInteger(receives) && receives > 0 ? receives : undefined,
        source: new URL(queueUrl).pathname.split('/').pop()!,
        extendHold: () => (holding = visibility(visibilityS)),
      },
      handler,
    );
    // A heartbeat's visibility change still in flight must not land after the action.
    await holding.catch(() => undefined);
    try {
      if (action.action === 'ack') await client.send(new sqs.DeleteMessageCommand(target));
      else if (action.action === 'retry') await visibility(toSeconds(action.delayMs));
      else if (deadLetterQueueUrl === undefined) await visibility(0);
      else {
        const group = message.Attributes?.MessageGroupId;
        await client.send(
          new sqs.SendMessageCommand({
            QueueUrl: deadLetterQueueUrl,
            MessageBody: message.Body,
            MessageAttributes: {
              // SQS takes at most 10 attributes: the reason and detail win over the last originals.
              ...Object.fromEntries(Object.entries(message.MessageAttributes ?? {}).slice(0, 8).map(([name, value]) => [name, copyAttribute(value)])),
              [DEAD_LETTER_REASON_ATTRIBUTE]: { DataType: 'String', StringValue: action.reason },
              [DEAD_LETTER_DETAIL_ATTRIBUTE]: { DataType: 'String', StringValue: action.detail.slice(0, 1000) || action.reason },
            },
            ...(group === undefined ? {} : { MessageGroupId: group, MessageDeduplicationId: message.MessageId }),
          }),
        );
        await client.send(new sqs.DeleteMessageCommand(target));
      }
    } catch (error) {
      report(error, message);
      return { ...action, brokerError: error };
    }
    return action;
  }
}

function copyAttribute({ DataType, StringValue, BinaryValue }: MessageAttributeValue): MessageAttributeValue {
  return { DataType, ...(StringValue === undefined ? {} : { StringValue }), ...(BinaryValue === undefined ? {} : { BinaryValue }) };
}

/**
 * Makes `handleSqsMessage(client, queueUrl, message, handler)` for your own poller: it runs
 * `handler` at most once per message identity (`MessageId`; on FIFO queues the
 * `MessageDeduplicationId`) and then deletes, delays or dead-letters the message, once. Receive
 * with `MessageSystemAttributeNames: SYSTEM_ATTRIBUTES` (attempts, FIFO identity) and
 * `MessageAttributeNames: ['All']` (copied to the dead-letter queue). Options (the shared ones
 * are in `ConsumerOptions`) are checked here, once.
 *
 * @example
 * ```ts
 * const handleSqsMessage = sqsMessageHandler({ store, deadLetterQueueUrl });
 * const { Messages = [] } = await client.send(new ReceiveMessageCommand({ QueueUrl, MessageSystemAttributeNames: [...SYSTEM_ATTRIBUTES], MessageAttributeNames: ['All'] }));
 * for (const message of Messages) await handleSqsMessage(client, QueueUrl, message, (m, { downstreamKey }) => sendWelcomeEmail(JSON.parse(m.Body!), downstreamKey));
 * ```
 */
export const sqsMessageHandler = (options: SqsConsumerOptions): SqsMessageHandler => makeHandler(options, 'sqsMessageHandler()').handleSqsMessage;

/**
 * Long-polls `queueUrl` and hands each message to `handler` through `sqsMessageHandler`: up to
 * `batchSize` at once, the next receive after they end. `close()` stops receiving, waits for the
 * running handlers and their deletes, and resolves; nothing is deleted after it. An open poll is
 * not aborted (SQS may still hand it messages, hidden for the visibility timeout): close() waits
 * for it, up to `waitTimeSeconds`, and makes what it brings visible again at once. SQS errors go
 * to `onError` and the poll resumes a second later: never a crash.
 *
 * @example
 * ```ts
 * const consumer = consumeIdempotently(new SQSClient({}), queueUrl, (m) => applyPayment(JSON.parse(m.Body!)), { store, deadLetterQueueUrl, maxAttempts: 5 });
 * process.once('SIGTERM', () => consumer.close());
 * ```
 */
export const consumeIdempotently = (client: SQSClient, queueUrl: string, handler: MessageHandler<Message>, options: SqsPollOptions): { close(): Promise<void> } => {
  const owner = 'consumeIdempotently()';
  checkTarget(owner, client, queueUrl);
  checkHandler(owner, handler);
  const { handleSqsMessage, report, read } = makeHandler(options, owner, ['batchSize', 'waitTimeSeconds']);
  const batchSize = read.count('batchSize', 10);
  if (batchSize > 10) read.invalid('batchSize', 'a whole number from 1 to 10');
  const waitTimeSeconds = options.waitTimeSeconds === 0 ? 0 : read.count('waitTimeSeconds', 20);
  if (waitTimeSeconds > 20) read.invalid('waitTimeSeconds', 'whole seconds from 0 to 20');
  const stop = new AbortController();

  const loop = (async () => {
    const sqs = await loadSdk();
    while (!stop.signal.aborted) {
      let messages: Message[];
      try {
        const received = await client.send(
          new sqs.ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: batchSize, WaitTimeSeconds: waitTimeSeconds, MessageSystemAttributeNames: [...SYSTEM_ATTRIBUTES], MessageAttributeNames: ['All'] }),
        );
        messages = received.Messages ?? [];
      } catch (error) {
        report(error, undefined);
        await sleep(1000, undefined, { signal: stop.signal }).catch(() => undefined);
        continue;
      }
      if (stop.signal.aborted) {
        // Received after close() began: hand them straight back.
        await Promise.all(messages.map((message) => client.send(new sqs.ChangeMessageVisibilityCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle, VisibilityTimeout: 0 })).catch(() => undefined)));
        break;
      }
      await Promise.all(messages.map((message) => handleSqsMessage(client, queueUrl, message, handler).catch((error: unknown) => report(error, message))));
    }
  })();

  return {
    async close() {
      stop.abort();
      await loop;
    },
  };
};
