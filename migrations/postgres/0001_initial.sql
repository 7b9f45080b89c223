-- aipersona initial schema (PostgreSQL): the same tables, columns and meaning as the SQLite
-- migration of the same number, so a database can be copied between the two
-- (`aipersona db copy`). Times are Unix seconds; values are JSON text.

CREATE TABLE personas (
    id          BIGSERIAL PRIMARY KEY,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);

-- (platform, platform_user_id) -> persona; several identities may share one persona.
CREATE TABLE identities (
    platform          TEXT NOT NULL,
    platform_user_id  TEXT NOT NULL,
    persona_id        BIGINT NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    display_name      TEXT,
    linked_at         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (platform, platform_user_id)
);
CREATE INDEX identities_persona ON identities(persona_id);

-- Current value of each persona field (JSON text) and its version counter.
CREATE TABLE persona_fields (
    persona_id  BIGINT NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    field       TEXT NOT NULL,
    value       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (persona_id, field)
);

-- Every change to every field: old and new value, why, from what, by whom.
CREATE TABLE persona_versions (
    id           BIGSERIAL PRIMARY KEY,
    persona_id   BIGINT NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    field        TEXT NOT NULL,
    version      INTEGER NOT NULL,
    op           TEXT NOT NULL,
    old_value    TEXT,
    new_value    TEXT,
    source       TEXT NOT NULL,
    session_ids  TEXT NOT NULL DEFAULT '[]',
    evidence     TEXT NOT NULL DEFAULT '',
    created_at   DOUBLE PRECISION NOT NULL
);
CREATE INDEX persona_versions_persona ON persona_versions(persona_id, id);

-- A persona optimizer run over k finished sessions. 'pending' rows survive restarts.
CREATE TABLE persona_updates (
    id           BIGSERIAL PRIMARY KEY,
    persona_id   BIGINT NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    session_ids  TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    created_at   DOUBLE PRECISION NOT NULL,
    finished_at  DOUBLE PRECISION
);
CREATE INDEX persona_updates_pending ON persona_updates(status) WHERE status = 'pending';

CREATE TABLE sessions (
    id               BIGSERIAL PRIMARY KEY,
    persona_id       BIGINT NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    platform         TEXT NOT NULL,
    chat_id          TEXT NOT NULL,
    started_at       DOUBLE PRECISION NOT NULL,
    last_message_at  DOUBLE PRECISION NOT NULL,
    ended_at         DOUBLE PRECISION,
    end_reason       TEXT,
    update_id        BIGINT REFERENCES persona_updates(id) ON DELETE SET NULL
);
CREATE INDEX sessions_open ON sessions(persona_id, platform, chat_id) WHERE ended_at IS NULL;
CREATE INDEX sessions_idle ON sessions(last_message_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_unscheduled ON sessions(persona_id) WHERE ended_at IS NOT NULL AND update_id IS NULL;

CREATE TABLE messages (
    id          BIGSERIAL PRIMARY KEY,
    session_id  BIGINT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    persona_id  BIGINT NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool', 'system')),
    content     TEXT NOT NULL,
    platform    TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX messages_session ON messages(session_id, id);
CREATE INDEX messages_persona ON messages(persona_id, id);
