-- Claims on scheduled persona updates: a worker takes a pending update for a lease, so that
-- several processes sharing one database run each update once. A claim whose lease ran out
-- (or whose process is gone) can be taken over.
ALTER TABLE persona_updates ADD COLUMN claimed_by TEXT;
ALTER TABLE persona_updates ADD COLUMN claimed_until REAL;
