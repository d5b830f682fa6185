-- oncely: idempotency records (migration 0001_oncely_records)
CREATE TABLE IF NOT EXISTS "public"."oncely_records" (
  id text PRIMARY KEY,
  state text NOT NULL CHECK (state IN ('in_progress', 'completed')),
  fingerprint text NOT NULL,
  token text NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  outcome bytea,
  namespace text,
  scope text,
  key text,
  CHECK ((state = 'completed') = (outcome IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS "oncely_records_expires_at_idx" ON "public"."oncely_records" (expires_at);
