-- Users in control: who set each field's current value (a user's own value is not
-- overwritten by the optimizer), a learning switch and the privacy notice per person, token
-- usage for budgets, the per-person data keys of encryption at rest, and an index for the
-- retention of message texts.
ALTER TABLE persona_fields ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE personas ADD COLUMN learning INTEGER NOT NULL DEFAULT 1;
ALTER TABLE personas ADD COLUMN noticed_at DOUBLE PRECISION;

-- tokens the endpoint reported, per person, chat, UTC day and role (chat, optimizer)
CREATE TABLE token_usage (
    persona_id         BIGINT NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    platform           TEXT NOT NULL,
    chat_id            TEXT NOT NULL,
    day                TEXT NOT NULL,
    role               TEXT NOT NULL,
    calls              BIGINT NOT NULL DEFAULT 0,
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (persona_id, platform, chat_id, day, role)
);
CREATE INDEX token_usage_chat ON token_usage(platform, chat_id, day);
CREATE INDEX token_usage_day ON token_usage(day);

-- a person's data key, encrypted ("wrapped") under the master key; deleted with the person
CREATE TABLE persona_keys (
    persona_id  BIGINT PRIMARY KEY REFERENCES personas(id) ON DELETE CASCADE,
    wrapped     TEXT NOT NULL,
    master_id   TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);

-- retention: updates whose sessions' texts are still kept, and the sessions of an update
ALTER TABLE persona_updates ADD COLUMN purged_at DOUBLE PRECISION;
CREATE INDEX persona_updates_unpurged ON persona_updates(finished_at)
    WHERE status <> 'pending' AND purged_at IS NULL;
CREATE INDEX sessions_update ON sessions(update_id) WHERE update_id IS NOT NULL;
