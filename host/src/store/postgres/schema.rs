//! The PostgreSQL schema: migrations applied in order at connect, counted in
//! `schema_migrations`. Never edit a published one: append.
//!
//! The tables mirror the embedded store's (see `sqlite/mod.rs`), in PostgreSQL's types: times
//! and counters are `BIGINT`, bodies and state values `BYTEA`, JSON stays `TEXT` (a payload is
//! kept exactly as the adapter emitted it, never re-serialized). Text that lists are ordered by
//! or paged with (ids, names, state keys) uses the `"C"` collation, so pages follow byte order
//! whatever the database's locale is, as they do in SQLite.

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE adapters (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    org_id      TEXT,
    name        TEXT COLLATE "C" NOT NULL CHECK (name <> ''),
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE adapter_versions (
    adapter_id   TEXT COLLATE "C" NOT NULL REFERENCES adapters (id),
    version      BIGINT NOT NULL CHECK (version >= 1),
    sha256       TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    info_json    TEXT NOT NULL,
    limits_json  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (adapter_id, version)
);

CREATE TABLE connections (
    id                    TEXT COLLATE "C" PRIMARY KEY,
    tenant_id             TEXT NOT NULL,
    org_id                TEXT,
    provider              TEXT NOT NULL,
    adapter_id            TEXT COLLATE "C" NOT NULL,
    adapter_version       BIGINT NOT NULL,
    signature_json        TEXT NOT NULL,
    allowed_org_ids_json  TEXT NOT NULL,
    secret_refs_json      TEXT NOT NULL,
    settings_json         TEXT NOT NULL,
    polling_json          TEXT,
    api_json              TEXT,
    status                TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    last_delivery_at      BIGINT,
    version_changed_by    TEXT,
    version_changed_at    BIGINT,
    FOREIGN KEY (adapter_id, adapter_version) REFERENCES adapter_versions (adapter_id, version)
);
CREATE INDEX connections_by_tenant ON connections (tenant_id, id);

CREATE TABLE deliveries (
    id                    TEXT COLLATE "C" PRIMARY KEY,
    connection_id         TEXT COLLATE "C" NOT NULL REFERENCES connections (id),
    tenant_id             TEXT NOT NULL,
    received_at           BIGINT NOT NULL,
    provider_delivery_id  TEXT,
    body_sha256           TEXT NOT NULL,
    method                TEXT NOT NULL,
    path                  TEXT NOT NULL,
    query                 TEXT NOT NULL,
    headers_json          TEXT NOT NULL,
    body                  BYTEA NOT NULL,
    status                TEXT NOT NULL
        CHECK (status IN ('received', 'processed', 'ignored', 'failed', 'rejected')),
    attempts              BIGINT NOT NULL DEFAULT 0,
    reason_json           TEXT,
    processed_at          BIGINT,
    trace_id              TEXT NOT NULL,
    -- A delivery left `received` is taken up again by recovery once its lease has ended.
    lease_until           BIGINT,
    kind                  TEXT NOT NULL DEFAULT 'webhook'
        CHECK (kind IN ('webhook', 'poll', 'push')),
    poll_run_id           TEXT,
    cursor                TEXT
);
CREATE UNIQUE INDEX deliveries_provider_id ON deliveries (connection_id, provider_delivery_id)
    WHERE provider_delivery_id IS NOT NULL;
CREATE INDEX deliveries_by_body ON deliveries (connection_id, body_sha256, received_at);
CREATE INDEX deliveries_by_connection ON deliveries (connection_id, id);
CREATE INDEX deliveries_by_tenant ON deliveries (tenant_id, id);
CREATE INDEX deliveries_unfinished ON deliveries (id) WHERE status = 'received';

CREATE TABLE invocations (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    delivery_id        TEXT COLLATE "C" NOT NULL REFERENCES deliveries (id),
    adapter_id         TEXT NOT NULL,
    adapter_version    BIGINT NOT NULL,
    adapter_sha256     TEXT NOT NULL,
    input_sha256       TEXT NOT NULL,
    started_at         BIGINT NOT NULL,
    duration_us        BIGINT NOT NULL,
    fuel               BIGINT NOT NULL,
    peak_memory_bytes  BIGINT NOT NULL,
    bytes_in           BIGINT NOT NULL,
    bytes_out          BIGINT NOT NULL,
    events             BIGINT NOT NULL,
    outcome            TEXT NOT NULL
        CHECK (outcome IN ('accepted', 'ignored', 'adapter_error', 'rejected', 'failed')),
    detail_json        TEXT,
    log_json           TEXT NOT NULL,
    export             TEXT NOT NULL
        CHECK (export IN ('handle_webhook', 'handle_poll', 'poll_request'))
);
CREATE INDEX invocations_by_delivery ON invocations (delivery_id, id);

-- integration_events_outbox: append-only (see the trigger below).
CREATE TABLE outbox (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         TEXT NOT NULL UNIQUE,
    tenant_id        TEXT NOT NULL,
    org_id           TEXT,
    event_type       TEXT NOT NULL CHECK (event_type <> ''),
    entity_type      TEXT NOT NULL CHECK (entity_type <> ''),
    entity_id        TEXT NOT NULL CHECK (entity_id <> ''),
    payload_json     TEXT NOT NULL,
    metadata_json    TEXT NOT NULL,
    delivery_id      TEXT NOT NULL,
    connection_id    TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'published', 'dead')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    published_at     BIGINT,
    last_error       TEXT
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
CREATE INDEX outbox_pending_by_entity_due
    ON outbox (tenant_id, entity_type, entity_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_by_tenant ON outbox (tenant_id, seq);
CREATE INDEX outbox_by_tenant_time ON outbox (tenant_id, created_at);

CREATE FUNCTION outbox_guard() RETURNS trigger LANGUAGE plpgsql AS $guard$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'the outbox is append-only';
    END IF;
    IF (NEW.seq, NEW.event_id, NEW.tenant_id, NEW.org_id, NEW.event_type, NEW.entity_type,
        NEW.entity_id, NEW.payload_json, NEW.metadata_json, NEW.delivery_id,
        NEW.connection_id, NEW.created_at)
       IS DISTINCT FROM
       (OLD.seq, OLD.event_id, OLD.tenant_id, OLD.org_id, OLD.event_type, OLD.entity_type,
        OLD.entity_id, OLD.payload_json, OLD.metadata_json, OLD.delivery_id,
        OLD.connection_id, OLD.created_at) THEN
        RAISE EXCEPTION 'outbox events are immutable';
    END IF;
    RETURN NEW;
END
$guard$;
CREATE TRIGGER outbox_guard BEFORE UPDATE OR DELETE ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_guard();

-- State is committed key by key: a row keeps the connection's version of the commit that
-- last wrote it.
CREATE TABLE connection_state (
    connection_id  TEXT COLLATE "C" NOT NULL REFERENCES connections (id),
    key            TEXT COLLATE "C" NOT NULL,
    value          BYTEA NOT NULL,
    version        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (connection_id, key)
);

-- One row per connection that committed state: its version, keys and bytes. A commit locks
-- this row, so commits of one connection are checked and applied one at a time, on any node.
CREATE TABLE connection_state_versions (
    connection_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES connections (id),
    version        BIGINT NOT NULL,
    keys           BIGINT NOT NULL DEFAULT 0,
    bytes          BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE subscribers (
    id                TEXT COLLATE "C" PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    org_id            TEXT,
    url               TEXT NOT NULL,
    event_types_json  TEXT NOT NULL,
    secret_ref        TEXT NOT NULL,
    enabled           BOOLEAN NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX subscribers_by_tenant ON subscribers (tenant_id, id);

-- entity_type and entity_id are copied from the outbox row: per-entity order without a join.
CREATE TABLE subscriber_deliveries (
    subscriber_id    TEXT COLLATE "C" NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    outbox_seq       BIGINT NOT NULL REFERENCES outbox (seq),
    entity_type      TEXT NOT NULL,
    entity_id        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_status      BIGINT,
    last_error       TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (subscriber_id, outbox_seq)
);
CREATE INDEX subscriber_deliveries_pending ON subscriber_deliveries (outbox_seq)
    WHERE status = 'pending';
CREATE INDEX subscriber_deliveries_pending_by_entity
    ON subscriber_deliveries (subscriber_id, entity_type, entity_id, outbox_seq)
    WHERE status = 'pending';

CREATE TABLE replays (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    org_id        TEXT,
    from_ms       BIGINT NOT NULL,
    to_ms         BIGINT NOT NULL,
    event_type    TEXT,
    requested_by  TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    replayed      BIGINT NOT NULL DEFAULT 0,
    finished_at   BIGINT,
    error         TEXT
);
CREATE INDEX replays_by_tenant ON replays (tenant_id, requested_at);
CREATE INDEX replays_running ON replays (tenant_id) WHERE status = 'running';

-- A connection's poll schedule and checkpoint. The cursor moves only with a committed page of
-- the run holding the lease.
CREATE TABLE poll_state (
    connection_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES connections (id),
    cursor         TEXT,
    next_run_at    BIGINT NOT NULL,
    failures       BIGINT NOT NULL DEFAULT 0,
    run_id         TEXT,
    lease_owner    TEXT,
    lease_until    BIGINT
);
CREATE INDEX poll_state_due ON poll_state (next_run_at);

CREATE TABLE poll_runs (
    id             TEXT COLLATE "C" PRIMARY KEY,
    connection_id  TEXT COLLATE "C" NOT NULL REFERENCES connections (id),
    tenant_id      TEXT NOT NULL,
    trigger        TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    owner          TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    status         TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    pages          BIGINT NOT NULL DEFAULT 0,
    events         BIGINT NOT NULL DEFAULT 0,
    records        BIGINT NOT NULL DEFAULT 0,
    requests       BIGINT NOT NULL DEFAULT 0,
    cursor_before  TEXT,
    cursor_after   TEXT,
    reason         TEXT
);
CREATE INDEX poll_runs_by_connection ON poll_runs (connection_id, id);

-- Every request made for a delivery or for a run that failed before it had a page.
-- Credentials never reach this table.
CREATE TABLE http_exchanges (
    id                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id            TEXT,
    invocation_id          TEXT,
    poll_run_id            TEXT,
    seq                    BIGINT NOT NULL,
    started_at             BIGINT NOT NULL,
    method                 TEXT NOT NULL,
    url                    TEXT NOT NULL,
    request_headers_json   TEXT NOT NULL,
    request_bytes          BIGINT NOT NULL,
    status                 BIGINT,
    response_headers_json  TEXT NOT NULL,
    response_bytes         BIGINT NOT NULL,
    response_body          BYTEA,
    attempts               BIGINT NOT NULL,
    duration_us            BIGINT NOT NULL,
    error                  TEXT
);
CREATE INDEX http_exchanges_by_delivery ON http_exchanges (delivery_id, seq)
    WHERE delivery_id IS NOT NULL;
CREATE INDEX http_exchanges_by_run ON http_exchanges (poll_run_id, started_at, id)
    WHERE poll_run_id IS NOT NULL;

-- Pending OAuth authorizations: the state's hash only, used once, until it expires.
CREATE TABLE oauth_states (
    state_hash     TEXT PRIMARY KEY,
    connection_id  TEXT COLLATE "C" NOT NULL REFERENCES connections (id),
    tenant_id      TEXT NOT NULL,
    org_id         TEXT,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);

-- Where a connection's authorization stands; its tokens are in the secret store.
CREATE TABLE connection_auth (
    connection_id      TEXT COLLATE "C" PRIMARY KEY REFERENCES connections (id),
    state              TEXT NOT NULL CHECK (state IN ('connected', 'error', 'disconnected')),
    reason             TEXT,
    connected_by       TEXT,
    connected_at       BIGINT,
    changed_at         BIGINT NOT NULL,
    access_expires_at  BIGINT,
    scopes             TEXT
);

-- Adapter components, content-addressed (PgBlobStore): every node reads the same ones.
CREATE TABLE blobs (
    sha256      TEXT PRIMARY KEY,
    bytes       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
"#,
    r#"
-- The management API's audit log: who changed what, when, for which request. Append-only:
-- the trigger refuses every change, delete and truncate, whoever asks.
CREATE TABLE audit (
    id             TEXT COLLATE "C" PRIMARY KEY,
    at             BIGINT NOT NULL,
    tenant_id      TEXT NOT NULL,
    org_id         TEXT,
    actor          TEXT NOT NULL,
    roles_json     TEXT NOT NULL,
    action         TEXT NOT NULL CHECK (action <> ''),
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    request_id     TEXT,
    status         BIGINT NOT NULL,
    detail_json    TEXT NOT NULL,
    support        BOOLEAN NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant_id, id);

CREATE FUNCTION audit_guard() RETURNS trigger LANGUAGE plpgsql AS $guard$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$guard$;
CREATE TRIGGER audit_guard BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_guard();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_guard();
"#,
    super::health::MIGRATION,
    r#"
-- An upload is answered before a slow compile ends: a version is `compiling`, then `ready`
-- (connections may run it) or `failed` with the reason. Versions before this were ready.
ALTER TABLE adapter_versions ADD COLUMN status TEXT NOT NULL DEFAULT 'ready'
    CHECK (status IN ('compiling', 'ready', 'failed'));
ALTER TABLE adapter_versions ADD COLUMN failure TEXT;

-- Replays name whom they re-send to (before: the bus only).
ALTER TABLE replays ADD COLUMN target TEXT NOT NULL DEFAULT 'bus'
    CHECK (target IN ('all', 'bus', 'subscribers'));
ALTER TABLE replays ADD COLUMN subscriber_id TEXT;
ALTER TABLE replays ADD COLUMN queued BIGINT NOT NULL DEFAULT 0;

-- What a connection's webhook checks besides its signature: source allow list, capability
-- secret (its name), methods.
ALTER TABLE connections ADD COLUMN webhook_json TEXT;
"#,
    r#"
-- Claims of subscriber deliveries skip an entity whose earlier delivery is in flight or waiting
-- to retry (and take the rest of a due run at once): found by this index, as for the outbox.
CREATE INDEX subscriber_deliveries_pending_by_entity_due
    ON subscriber_deliveries (subscriber_id, entity_type, entity_id, next_attempt_at)
    WHERE status = 'pending';
"#,
    super::drift::MIGRATION,
    super::retention::MIGRATION,
    r#"
-- Encryption at rest (see vault.rs): a sealed body is longer than the body, whose size is kept
-- here; rows written before read their size from the body itself.
ALTER TABLE deliveries ADD COLUMN body_bytes BIGINT;

-- Erasure overwrites a payload (one stored in the clear before encryption, or one person's)
-- with the erased marker: a payload changes only that way; every other column of an event
-- stays immutable.
CREATE OR REPLACE FUNCTION outbox_guard() RETURNS trigger LANGUAGE plpgsql AS $guard$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'the outbox is append-only';
    END IF;
    IF (NEW.seq, NEW.event_id, NEW.tenant_id, NEW.org_id, NEW.event_type, NEW.entity_type,
        NEW.entity_id, NEW.metadata_json, NEW.delivery_id, NEW.connection_id, NEW.created_at)
       IS DISTINCT FROM
       (OLD.seq, OLD.event_id, OLD.tenant_id, OLD.org_id, OLD.event_type, OLD.entity_type,
        OLD.entity_id, OLD.metadata_json, OLD.delivery_id, OLD.connection_id, OLD.created_at)
    THEN
        RAISE EXCEPTION 'outbox events are immutable';
    END IF;
    IF NEW.payload_json IS DISTINCT FROM OLD.payload_json
       AND NEW.payload_json IS DISTINCT FROM '~erased1' THEN
        RAISE EXCEPTION 'outbox events are immutable: a payload is only ever erased';
    END IF;
    RETURN NEW;
END
$guard$;
"#,
    super::retention::TENANTS_MIGRATION,
    super::identities::MIGRATION,
    r#"
-- The payload fields a connection withholds from export (see export.rs).
ALTER TABLE connections ADD COLUMN export_json TEXT;

-- What replays an invocation exactly (see replay.rs), sealed; kept, purged and erased with its
-- log.
ALTER TABLE invocations ADD COLUMN replay_json TEXT;
"#,
];
