-- oncely: records someone waits on (migration 0002_settle_waiters)
-- Only their settles send a NOTIFY: PostgreSQL serialises the commits of notifying transactions.
ALTER TABLE "public"."oncely_records" ADD COLUMN IF NOT EXISTS waited boolean NOT NULL DEFAULT false;
