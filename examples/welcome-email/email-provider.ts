/**
 * A fake email provider that takes an idempotency key, as Postmark, SendGrid or Stripe do: a
 * request with a key it has already seen sends nothing and answers with the first email. Its
 * "sent mail" is the table `emails` in its own SQLite file, one row per email that went out,
 * so the example can count them. Several worker processes call it on the same file.
 */
import Database from 'better-sqlite3';

export interface Email {
  to: string;
  template: string;
}

export interface SendResult {
  /** The provider's id of the email. */
  emailId: number;
  /** `false` when the key had been used: this request sent nothing. */
  sent: boolean;
}

export class FakeEmailProvider {
  readonly #db: Database.Database;

  constructor(path: string) {
    this.#db = new Database(path, { timeout: 5_000 });
    this.#db.pragma('journal_mode = WAL');
    this.#db.exec(`CREATE TABLE IF NOT EXISTS emails (
      id INTEGER PRIMARY KEY,
      idempotency_key TEXT NOT NULL UNIQUE,
      recipient TEXT NOT NULL,
      template TEXT NOT NULL,
      sent_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )`);
  }

  /** `POST /email` with an `Idempotency-Key` header, in one statement. */
  async send(email: Email, { idempotencyKey }: { idempotencyKey: string }): Promise<SendResult> {
    const inserted = this.#db
      .prepare<[string, string, string], { id: number }>('INSERT INTO emails (idempotency_key, recipient, template) VALUES (?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id')
      .get(idempotencyKey, email.to, email.template);
    if (inserted) return { emailId: inserted.id, sent: true };
    const first = this.#db.prepare<[string], { id: number }>('SELECT id FROM emails WHERE idempotency_key = ?').get(idempotencyKey)!;
    return { emailId: first.id, sent: false };
  }

  /** Emails that went out, per recipient. */
  sentTo(recipient: string): number {
    return this.#db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM emails WHERE recipient = ?').get(recipient)!.n;
  }

  close(): void {
    this.#db.close();
  }
}
