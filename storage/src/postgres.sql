-- The Storefront schema for PostgreSQL, applied by `storefront migrate` (idempotent). Every table
-- lives in the connection's current schema (the first of its search_path).

CREATE TABLE IF NOT EXISTS storefront_schema (
    version integer NOT NULL
);

-- The last sequence of every stream: the row an append's expected sequence is checked against.
CREATE TABLE IF NOT EXISTS stream_heads (
    stream text PRIMARY KEY,
    last_seq bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS journal (
    stream text NOT NULL,
    seq bigint NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (stream, seq)
);

CREATE TABLE IF NOT EXISTS snapshots (
    stream text PRIMARY KEY,
    seq bigint NOT NULL,
    state bytea NOT NULL
);

-- position = (id of the writing transaction << 16) + index in the append: a reader that only
-- takes rows of transactions older than every running one can never skip a row committed later.
CREATE TABLE IF NOT EXISTS outbox (
    position bigint PRIMARY KEY,
    event_id text NOT NULL,
    topic text NOT NULL,
    payload bytea NOT NULL
);

-- Who holds each shard; every change of holder raises the epoch. A fenced append share-locks its
-- shard's row, so a lease change waits for appends in flight and every later one sees it.
CREATE TABLE IF NOT EXISTS shard_leases (
    shard integer PRIMARY KEY,
    owner text,
    epoch bigint NOT NULL
);

-- Every keyed table of the read side, by its stable name.
CREATE TABLE IF NOT EXISTS kv (
    tbl text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tbl, key)
);

-- One append as one statement (so one transaction and one round trip): checks and moves the
-- stream's head, writes the events, the outbox records and the keyed writes (a NULL value
-- deletes). On a sequence conflict it writes nothing and answers the head it found; with a fence
-- (a shard and an epoch) it writes nothing unless that shard's lease is held at that epoch.
CREATE OR REPLACE FUNCTION storefront_append(
    p_stream text,
    p_expected bigint,
    p_events bytea[],
    p_outbox_ids text[],
    p_outbox_topics text[],
    p_outbox_payloads bytea[],
    p_put_tables text[],
    p_put_keys bytea[],
    p_put_values bytea[],
    p_fence_shard integer,
    p_fence_epoch bigint,
    OUT applied boolean,
    OUT head bigint,
    OUT fenced boolean
) LANGUAGE plpgsql AS $$
DECLARE
    n bigint := cardinality(p_events);
    base bigint;
BEGIN
    fenced := false;
    IF p_fence_shard IS NOT NULL THEN
        PERFORM 1 FROM shard_leases
            WHERE shard = p_fence_shard AND epoch = p_fence_epoch AND owner IS NOT NULL
            FOR SHARE;
        IF NOT FOUND THEN
            applied := false;
            fenced := true;
            RETURN;
        END IF;
    END IF;
    IF p_expected = 0 THEN
        INSERT INTO stream_heads (stream, last_seq) VALUES (p_stream, n)
            ON CONFLICT (stream) DO NOTHING;
    ELSE
        UPDATE stream_heads SET last_seq = p_expected + n
            WHERE stream = p_stream AND last_seq = p_expected;
    END IF;
    IF NOT FOUND THEN
        applied := false;
        SELECT h.last_seq INTO head FROM stream_heads h WHERE h.stream = p_stream;
        head := coalesce(head, 0);
        RETURN;
    END IF;
    INSERT INTO journal (stream, seq, payload)
        SELECT p_stream, p_expected + e.ord, e.payload
        FROM unnest(p_events) WITH ORDINALITY AS e(payload, ord);
    IF cardinality(p_outbox_ids) > 0 THEN
        base := (pg_current_xact_id()::text::bigint) << 16;
        INSERT INTO outbox (position, event_id, topic, payload)
            SELECT base + o.ord, o.event_id, o.topic, o.payload
            FROM unnest(p_outbox_ids, p_outbox_topics, p_outbox_payloads)
                WITH ORDINALITY AS o(event_id, topic, payload, ord);
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_put_keys), 0) LOOP
        IF p_put_values[i] IS NULL THEN
            DELETE FROM kv WHERE tbl = p_put_tables[i] AND key = p_put_keys[i];
        ELSE
            INSERT INTO kv (tbl, key, value) VALUES (p_put_tables[i], p_put_keys[i], p_put_values[i])
                ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value;
        END IF;
    END LOOP;
    applied := true;
    head := p_expected + n;
END
$$;
