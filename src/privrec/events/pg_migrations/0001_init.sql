-- privrec event store on PostgreSQL, schema version 1.
-- Gated events only: "user", session and event_id are keyed pseudonyms (the gate runs before).

-- The idempotency ledger: one row per stored event id, across every partition of `events`
-- (a unique index on a table partitioned by time must include the time column, and a shop's own
-- event ids do not fix the time, so the global uniqueness lives here). An id is 128 bits
-- (32 hex digits), kept as uuid: half the key size of the text and cheaper comparisons.
CREATE TABLE event_ids (
    event_id uuid PRIMARY KEY
);

-- Arrival order: ties in ts are returned in the order they were stored.
CREATE SEQUENCE events_seq;

-- Events, partitioned by month on ts (Unix seconds). Month partitions are created on demand by
-- the store before a batch that needs them; events outside 1970..2199 land in events_other.
CREATE TABLE events (
    seq bigint NOT NULL DEFAULT nextval('events_seq'),
    event_id text NOT NULL,
    "user" text NOT NULL,
    item text NOT NULL,
    type text NOT NULL,
    ts double precision NOT NULL,
    rating double precision,
    query text,
    session text
) PARTITION BY RANGE (ts);

CREATE TABLE events_other PARTITION OF events DEFAULT;

-- Only equality lookups by user (one shopper's history, erasure, consent downgrades): a hash
-- index costs about a third less per insert than a B-tree on random pseudonyms.
CREATE INDEX events_user_idx ON events USING hash ("user");

CREATE TABLE items (
    item text PRIMARY KEY,
    title text,
    category text,
    brand text,
    price double precision,
    in_stock boolean,
    text text,
    image_url text
);

CREATE TABLE meta (
    key text PRIMARY KEY,
    value text
);
