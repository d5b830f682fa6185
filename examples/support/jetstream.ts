/**
 * The JetStream side of the crash examples: a stream of its own per run with one durable
 * consumer, publishing with `Nats-Msg-Id`, the ack floor, and the teardown.
 */
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';

export const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';

export class JetStreamQueue {
  private constructor(
    readonly stream: string,
    readonly durable: string,
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
  ) {}

  /** Connects to NATS_URL; the stream and its consumer are made by `create`. */
  static async connect(stream: string, durable: string): Promise<JetStreamQueue> {
    const nc = await connect({ servers: NATS_URL });
    return new JetStreamQueue(stream, durable, nc, await jetstreamManager(nc), jetstream(nc));
  }

  /**
   * The stream (subjects `<stream>.>`) and its durable consumer. A 100 ms dedupe window stands in
   * for a producer that retries its publish later than JetStream's window (2 min by default): the
   * same message is then stored twice. AckWait 1 s: a killed consumer's message comes back
   * quickly (it must be at least leaseMs / 2).
   */
  async create({ workQueue = false }: { workQueue?: boolean } = {}): Promise<void> {
    await this.jsm.streams.add({ name: this.stream, subjects: [`${this.stream}.>`], ...(workQueue ? { retention: 'workqueue' as never } : {}), duplicate_window: 100_000_000 });
    await this.jsm.consumers.add(this.stream, { durable_name: this.durable, ack_policy: 'explicit' as never, ack_wait: 1_000_000_000, max_deliver: -1 });
  }

  /** Publishes until JetStream stores it as a message of its own (within the dedupe window it drops it); returns its stream sequence. */
  async publish(subject: string, body: string, msgId: string): Promise<number> {
    const h = headers();
    h.set('Nats-Msg-Id', msgId);
    for (;;) {
      const ack = await this.js.publish(`${this.stream}.${subject}`, body, { headers: h });
      if (!ack.duplicate) return ack.seq;
      await sleep(25);
    }
  }

  /** The consumer's ack floor when nothing is pending or awaiting its ack, else 0. */
  async ackedThrough(): Promise<number> {
    const info = await this.jsm.consumers.info(this.stream, this.durable);
    return info.num_pending === 0 && info.num_ack_pending === 0 ? info.ack_floor.stream_seq : 0;
  }

  /** Deletes the stream (if it was made) and closes the connection. */
  async destroy(): Promise<void> {
    await this.jsm.streams.delete(this.stream).catch(() => undefined);
    await this.nc.close();
  }
}
