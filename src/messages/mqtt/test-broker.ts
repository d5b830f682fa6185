/**
 * The tests' side of Mosquitto (127.0.0.1:1883): consumer clients with persistent sessions,
 * a publisher, a dead-letter watcher, and what a session still holds after a consumer ends.
 * Topics and client ids are unique per test; every session a test made is deleted by `cleanUp`.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { skipUnlessReachable } from '../../../test/support/services.js';

export const MQTT_URL = process.env.ONCELY_MQTT_URL ?? 'mqtt://127.0.0.1:1883';

/** `undefined` when Mosquitto answers; otherwise why the tests skip (under CI: throws). */
export const mqttSkip = (): Promise<string | undefined> => skipUnlessReachable('Mosquitto', MQTT_URL);

export const unique = (what: string): string => `oncely-test/${what}-${randomUUID().slice(0, 8)}`;

/** What a consumer takes: MQTT 5, a persistent session, not connected yet (the adapter installs its handler first). */
export const sessionOptions = (clientId: string): IClientOptions => ({
  protocolVersion: 5,
  clientId,
  clean: false,
  properties: { sessionExpiryInterval: 300 },
  reconnectPeriod: 100,
});

const sessions = new Set<string>();
const clients = new Set<MqttClient>();

export function consumerClient(clientId: string, options: IClientOptions = {}): MqttClient {
  sessions.add(clientId);
  const client = mqtt.connect(MQTT_URL, { ...sessionOptions(clientId), ...options });
  client.on('error', () => undefined);
  clients.add(client);
  return client;
}

export async function endClient(client: MqttClient): Promise<void> {
  clients.delete(client);
  // A graceful end flushes the last PUBACK written; a forced one may drop it on a busy machine.
  // It can wait forever for an acknowledgement MQTT.js no longer reads: then force it.
  const ended = await Promise.race([client.endAsync(false).then(() => true), sleep(1_000).then(() => false)]);
  if (!ended) await client.endAsync(true);
}

let publisher: MqttClient | undefined;

/** Publishes at QoS 1 (acknowledged by the broker); `id` becomes the `message-id` user property. */
export async function publish(topic: string, body: string, id?: string, userProperties: Record<string, string> = {}): Promise<void> {
  publisher ??= await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `oncely-test-publisher-${randomUUID().slice(0, 8)}` });
  const properties = id === undefined ? userProperties : { ...userProperties, 'message-id': id };
  // An empty userProperties makes MQTT.js write a PUBLISH the broker never answers.
  await publisher.publishAsync(topic, body, { qos: 1, ...(Object.keys(properties).length > 0 ? { properties: { userProperties: properties } } : {}) });
}

export interface Received {
  topic: string;
  body: string;
  properties: Record<string, string | string[]>;
}

/** Subscribes (clean session) and collects what arrives on `topic`. */
export async function watch(topic: string): Promise<{ received: Received[]; close: () => Promise<void> }> {
  const client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `oncely-test-watch-${randomUUID().slice(0, 8)}` });
  clients.add(client);
  const received: Received[] = [];
  client.on('message', (messageTopic, payload, packet: IPublishPacket) => {
    received.push({ topic: messageTopic, body: payload.toString(), properties: { ...packet.properties?.userProperties } });
  });
  await client.subscribeAsync(topic, { qos: 1 });
  return { received, close: () => endClient(client) };
}

/**
 * Resumes `clientId`'s session for `ms` and returns the `message-id`s the broker resends: what
 * the consumer left unacknowledged. Then deletes the session.
 */
export async function leftInSession(clientId: string, ms = 400): Promise<string[]> {
  const ids: string[] = [];
  const client = mqtt.connect(MQTT_URL, {
    ...sessionOptions(clientId),
    customHandleAcks: (_topic, _payload, packet: IPublishPacket, done) => {
      ids.push(String(packet.properties?.userProperties?.['message-id']));
      done(0);
    },
  });
  await sleep(ms);
  await client.endAsync(true);
  await deleteSession(clientId);
  return ids;
}

async function deleteSession(clientId: string): Promise<void> {
  const client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId, clean: true, properties: { sessionExpiryInterval: 0 } });
  await client.endAsync();
  sessions.delete(clientId);
}

export async function cleanUp(): Promise<void> {
  await Promise.all([...clients].map((client) => endClient(client)));
  await Promise.all([...sessions].map((clientId) => deleteSession(clientId)));
  await publisher?.endAsync();
  publisher = undefined;
}

/** Polls `condition` every 10 ms until it holds; fails after `ms`, saying what it waited for. */
export async function until(what: string, condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}
