/**
 * `oncely/mqtt`: an idempotent MQTT 5 consumer on the user's own MQTT.js client. The protocol
 * (../protocol.ts) decides each delivery; this file reads it and sends the one PUBACK.
 *
 * MQTT 5 has no per-message nack, delay or delivery count, and its packet ids are reused, so:
 * - identity is a user property (`message-id`), never the packet id;
 * - the PUBACK is sent from `customHandleAcks` only after the outcome is stored; MQTT.js reads
 *   no other packet until then, so messages are handled one at a time, in order, per client;
 * - `retry` keeps the message unacknowledged and runs it again here after `delayMs`; if the
 *   process dies or the connection drops first, the broker resends it when the persistent
 *   session (`clean: false`, fixed `clientId`, `sessionExpiryInterval` > 0) resumes;
 * - `attempt` counts this process's runs, a broker redelivery (DUP) counting as the second;
 * - dead letters are published at QoS 1 to `deadLetterTopic` with the reason as a user property.
 */
import type { IClientPublishOptions, IPublishPacket, MqttClient } from 'mqtt';
import { InvalidOptionError } from '../../core/errors.js';
import { describeValue } from '../../core/store-kit.js';
import { checkHandler, createMessageProtocol, type ConsumerOptions, type MessageAction, type MessageHandler } from '../protocol.js';

/** One delivery, as the handler, `key`, `scope` and `fingerprint` see it. */
export interface MqttMessage {
  /** The topic it was published to. */
  topic: string;
  payload: Buffer;
  /** The PUBLISH packet: `properties.userProperties`, `contentType`, `dup`… */
  packet: IPublishPacket;
}

export interface MqttConsumerOptions extends ConsumerOptions<MqttMessage> {
  /** Required. Where messages that must never run (mismatch, no identity, permanent error, `maxAttempts`) are published, at QoS 1, with user properties `dead-letter-reason`, `dead-letter-detail` and `dead-letter-topic`. No wildcards, and not matched by the consumer's own topic filter. */
  deadLetterTopic: string;
  /** The MQTT 5 user property that holds the message identity. Default `'message-id'`. */
  idProperty?: string;
}

export interface MqttConsumer {
  /** Resolves once the broker granted the QoS 1 subscription; rejects (`InvalidOptionError` naming `topic`) if it refused. */
  ready: Promise<void>;
  /** Takes no more messages, ends waiting retries, waits for the running handler; what is left unacknowledged the broker resends in the next session. End the client afterwards. */
  close(): Promise<void>;
}

const OWNER = 'consumeIdempotently()';
const consumed = new WeakSet<object>();
type Done = (error: Error | number, code?: number) => void;

/**
 * Runs `handler` at most once per message identity for the messages on `topic` (a filter;
 * `$share/<group>/…` for competing consumers), and acknowledges each only after its outcome is
 * stored. `client` must be an MQTT 5 client with a persistent session, not connected yet (so no
 * message the session kept is acknowledged before the consumer reads it); it serves this
 * consumer alone. Inside the handler, do not await a QoS 1/2 publish on the same client: its
 * PUBACK is read only after the delivery ends.
 *
 * @example
 * ```ts
 * const client = mqtt.connect('mqtt://127.0.0.1:1883', { protocolVersion: 5, clientId: 'mailer-1', clean: false, properties: { sessionExpiryInterval: 86_400 } });
 * const consumer = consumeIdempotently(client, '$share/mailers/welcome-emails', async (message, { downstreamKey }) => {
 *   await mailer.send(JSON.parse(message.payload.toString()), { idempotencyKey: downstreamKey });
 * }, { store, deadLetterTopic: 'welcome-emails/dead' });
 * await consumer.ready;
 * // on shutdown:
 * await consumer.close();
 * await client.endAsync();
 * ```
 */
export const consumeIdempotently = (client: MqttClient, topic: string, handler: MessageHandler<MqttMessage>, options: MqttConsumerOptions): MqttConsumer => {
  checkClient(client);
  if (typeof topic !== 'string' || topic === '') throw new InvalidOptionError(`${OWNER}: \`topic\` must be a non-empty topic filter, got ${describeValue(topic)}`, 'topic');
  checkHandler(OWNER, handler);
  const { deliver, read } = createMessageProtocol(options, OWNER, ['deadLetterTopic', 'idProperty']);
  if (options.deadLetterTopic === undefined) throw new InvalidOptionError(`${OWNER}: \`deadLetterTopic\` is required: where messages that must never run are published`, 'deadLetterTopic');
  const deadLetterTopic = read.string('deadLetterTopic', '');
  if (/[+#]/.test(deadLetterTopic) || matches(topic, deadLetterTopic)) read.invalid('deadLetterTopic', `a topic without wildcards that ${JSON.stringify(topic)} does not match`);
  const idProperty = read.string('idProperty', 'message-id');
  consumed.add(client);

  let closed = false;
  let connection = 0;
  const onClose = () => connection++;
  client.on('close', onClose);
  const stop = new AbortController();
  const running = new Set<Promise<void>>();
  const previous = client.options.customHandleAcks;
  client.options.customHandleAcks = (packetTopic: string, payload: Buffer, packet: IPublishPacket, done: Done) => {
    if (!matches(topic, packetTopic)) return previous?.(packetTopic, payload, packet, done);
    // After close() nothing is acknowledged: MQTT.js stops here and the broker keeps the message.
    if (closed) return;
    const settled = settle({ topic: packetTopic, payload, packet }, done, connection).finally(() => running.delete(settled));
    running.add(settled);
  };

  async function settle(message: MqttMessage, done: Done, seen: number): Promise<void> {
    const id = message.packet.properties?.userProperties?.[idProperty];
    for (let attempt = message.packet.dup ? 2 : 1; ; attempt++) {
      const action = await deliver(message, { id: typeof id === 'string' ? id : undefined, body: message.payload, attempt, source: topic }, handler);
      // The PUBACK belongs to the connection the message came on; on another it could ack a reused packet id.
      if (seen !== connection) return;
      if (action.action === 'dead-letter' && !(await publishDeadLetter(message, action))) return;
      if (action.action !== 'retry') return acknowledge(done);
      if (closed || !(await pause(action.delayMs, stop.signal)) || seen !== connection) return;
    }
  }

  /** Resolves once the dead letter is written ahead of the PUBACK on this connection (its own PUBACK is read only after ours). */
  function publishDeadLetter(message: MqttMessage, action: Extract<MessageAction, { action: 'dead-letter' }>): Promise<boolean> {
    const { topicAlias: _alias, subscriptionIdentifier: _subscription, ...properties } = message.packet.properties ?? {};
    const userProperties = { ...properties.userProperties, 'dead-letter-reason': action.reason, 'dead-letter-detail': action.detail, 'dead-letter-topic': message.topic };
    return new Promise((resolve) => {
      const publish: IClientPublishOptions = { qos: 1, properties: { ...properties, userProperties }, cbStorePut: () => resolve(true) };
      try {
        client.publish(deadLetterTopic, message.payload, publish, (error) => error && resolve(false));
      } catch {
        resolve(false);
      }
    });
  }

  const ready = subscribe(client, topic);
  // Refused or not, `ready` is the user's to await: unawaited, it must not end the process.
  ready.catch(() => undefined);
  return {
    ready,
    async close() {
      closed = true;
      stop.abort();
      while (running.size > 0) await Promise.allSettled([...running]);
      client.removeListener('close', onClose);
    },
  };
};

function checkClient(client: MqttClient): void {
  const fail = (expected: string): never => {
    throw new InvalidOptionError(`${OWNER}: \`client\` must be ${expected}`, 'client');
  };
  if (typeof client !== 'object' || client === null || typeof client.publish !== 'function' || typeof client.options !== 'object') {
    fail(`an MQTT.js client (mqtt.connect(url, options)), got ${describeValue(client)}`);
  }
  const { protocolVersion, clean, clientId, properties } = client.options;
  if (protocolVersion !== 5) fail('an MQTT 5 client (protocolVersion: 5): the message identity is a user property');
  if (clean !== false || !((properties?.sessionExpiryInterval ?? 0) > 0) || !clientId || clientId.startsWith('mqttjs_')) {
    fail('a persistent session (clean: false, a fixed clientId, properties.sessionExpiryInterval > 0): without one an unacknowledged message is never resent');
  }
  if (client.connected) fail('not connected yet: MQTT.js acknowledges what the session kept as soon as it connects; pass the client returned by mqtt.connect()');
  if (consumed.has(client)) fail('a client no other consumer uses');
}

async function subscribe(client: MqttClient, topic: string): Promise<void> {
  const [grant] = await client.subscribeAsync(topic, { qos: 1 });
  if (grant?.qos !== 1) throw new InvalidOptionError(`${OWNER}: the broker granted ${JSON.stringify(topic)} QoS ${grant?.qos}, not 1: QoS 1 is what makes it resend an unacknowledged message`, 'topic');
}

/** MQTT.js may throw if the connection is going away; the broker then resends the message, answered as a duplicate. */
function acknowledge(done: Done): void {
  try {
    done(0);
  } catch {
    // Nothing else to do: an unacknowledged message comes back.
  }
}

/** Resolves `true` after `ms`, or `false` at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    const abort = () => (clearTimeout(timer), resolve(false));
    const timer = setTimeout(() => (signal.removeEventListener('abort', abort), resolve(true)), ms);
    signal.addEventListener('abort', abort, { once: true });
  });
}

/** MQTT topic filter matching (MQTT 5 §4.7), `$share/<group>/` stripped. */
function matches(filter: string, topic: string): boolean {
  const levels = filter.replace(/^\$share\/[^/]+\//, '').split('/');
  const parts = topic.split('/');
  if (parts[0]!.startsWith('$') && (levels[0] === '+' || levels[0] === '#')) return false;
  for (const [index, level] of levels.entries()) {
    if (level === '#') return true;
    if (index >= parts.length || (level !== '+' && level !== parts[index])) return false;
  }
  return levels.length === parts.length;
}
