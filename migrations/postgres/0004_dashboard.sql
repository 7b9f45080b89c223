-- The operator dashboard: how each persona update ended (outcome, edits applied and refused,
-- the optimizer call's tokens and latency), which update wrote each version, counters per
-- UTC day that outlive the rows they count (retention deletes message texts), and indexes
-- that let the people list and the optimizer log page through millions of rows without a
-- full scan.
ALTER TABLE persona_updates ADD COLUMN outcome TEXT;
ALTER TABLE persona_updates ADD COLUMN edits_applied BIGINT NOT NULL DEFAULT 0;
ALTER TABLE persona_updates ADD COLUMN edits_refused BIGINT NOT NULL DEFAULT 0;
ALTER TABLE persona_updates ADD COLUMN prompt_tokens BIGINT;
ALTER TABLE persona_updates ADD COLUMN completion_tokens BIGINT;
ALTER TABLE persona_updates ADD COLUMN seconds DOUBLE PRECISION;
ALTER TABLE persona_versions ADD COLUMN update_id BIGINT;

CREATE INDEX persona_updates_persona ON persona_updates(persona_id, id);
CREATE INDEX persona_updates_outcome ON persona_updates(outcome, id);
CREATE INDEX persona_versions_update ON persona_versions(update_id) WHERE update_id IS NOT NULL;
-- a person's latest sessions (and the cascade when a person is deleted)
CREATE INDEX sessions_persona ON sessions(persona_id, id);

-- the people list: by user id on any platform, by display name (ASCII case folded) on any
-- platform or on one; one platform by user id is the primary key. Prefix searches are
-- ranges in code point order, so these keys use the "C" collation (and lower() under "C"
-- folds ASCII letters only, like SQLite's).
CREATE INDEX identities_user ON identities((platform_user_id COLLATE "C"), platform);
CREATE INDEX identities_name
    ON identities((lower(display_name COLLATE "C")), platform, platform_user_id);
CREATE INDEX identities_platform_name
    ON identities(platform, (lower(display_name COLLATE "C")), platform_user_id);

-- counters per UTC day, one row per counter and shard (see core/insights.py COUNTERS)
CREATE TABLE daily_stats (
    day    TEXT NOT NULL,
    name   TEXT NOT NULL,
    shard  INTEGER NOT NULL,
    value  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, name, shard)
);
-- every day of one counter (the number of people is new_users less users_removed, ever)
CREATE INDEX daily_stats_name ON daily_stats(name, day);

-- what earlier versions stored, carried over: an optimizer version was written in the same
-- transaction (at the same time) as the update it completed
UPDATE persona_versions SET update_id = (
    SELECT u.id FROM persona_updates u
    WHERE u.persona_id = persona_versions.persona_id AND u.status = 'done'
        AND u.finished_at = persona_versions.created_at
    ORDER BY u.id LIMIT 1
) WHERE source = 'optimizer';
UPDATE persona_updates SET edits_applied = (
    SELECT COUNT(*) FROM persona_versions v WHERE v.update_id = persona_updates.id
) WHERE status = 'done';
UPDATE persona_updates SET outcome = CASE
    WHEN status = 'failed' THEN 'failed'
    WHEN edits_applied > 0 THEN 'applied'
    WHEN error IS NOT NULL THEN 'rejected'
    ELSE 'unchanged'
END WHERE status <> 'pending';

INSERT INTO daily_stats (day, name, shard, value)
    SELECT to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 'messages', 0,
        COUNT(*)
    FROM messages WHERE role = 'user' GROUP BY 1;
INSERT INTO daily_stats (day, name, shard, value)
    SELECT to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 'new_users', 0,
        COUNT(*)
    FROM personas GROUP BY 1;
INSERT INTO daily_stats (day, name, shard, value)
    SELECT day, role || '_calls', 0, SUM(calls) FROM token_usage GROUP BY day, role;
INSERT INTO daily_stats (day, name, shard, value)
    SELECT day, role || '_prompt_tokens', 0, SUM(prompt_tokens) FROM token_usage
    GROUP BY day, role;
INSERT INTO daily_stats (day, name, shard, value)
    SELECT day, role || '_completion_tokens', 0, SUM(completion_tokens) FROM token_usage
    GROUP BY day, role;
INSERT INTO daily_stats (day, name, shard, value)
    SELECT to_char(to_timestamp(finished_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
        'updates_' || outcome, 0, COUNT(*)
    FROM persona_updates WHERE outcome IS NOT NULL AND finished_at IS NOT NULL
    GROUP BY 1, outcome;
INSERT INTO daily_stats (day, name, shard, value)
    SELECT to_char(to_timestamp(finished_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
        'edits_applied', 0, SUM(edits_applied)
    FROM persona_updates WHERE edits_applied > 0 GROUP BY 1;
