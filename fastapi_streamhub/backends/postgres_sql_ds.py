"""The PostgreSQL schema of Durable Streams (see ``postgres_ds``): one row per stream, its
producers, and one plpgsql function per operation (the twins of ``lua/ds_*.lua``).

A stream's id and a session's share one namespace: a create and a claim of the same id both
take the advisory lock of that id first (``hashtextextended('<p>:' || id, 0)``), so a create
answers ``conflict`` for a session's id and a claim refuses a stream's id (``{p}_is_stream``).
Expiry is the row's ``deadline``: an expired stream is dropped by the next operation that
looks it up (its source's fork count goes down with it), and by the retention sweep.
"""

from __future__ import annotations

__all__ = ["DS_SQL", "DS_TABLES"]

DS_TABLES = ("stream", "stream_producer")

DS_SQL = r"""
CREATE TABLE {p}_stream (
  stream_id    text PRIMARY KEY,
  content_type text    NOT NULL,
  ttl          bigint,                   -- seconds of the sliding window, or NULL
  expires_text text,                     -- Expires-At as given, or NULL
  expires_ms   bigint,                   -- ... in Unix ms
  created_closed boolean NOT NULL,       -- the spec's closed
  fork_spec    text,                     -- a fork's origin as asked (compared, not read)
  closed       boolean NOT NULL DEFAULT false,
  gone         boolean NOT NULL DEFAULT false,   -- soft-deleted while forks of it live
  seq          bytea,                    -- the last Stream-Seq (compared bytewise)
  source       text,                     -- a fork's source id
  forks        bigint  NOT NULL DEFAULT 0,       -- forks of it that live
  deadline     timestamptz NOT NULL,     -- expiry: absent to everyone past it
  data         bytea   NOT NULL DEFAULT ''::bytea  -- the bytes; the tail is their length
);
-- Uncompressed out of line: a read's substring fetches only the slices it needs.
ALTER TABLE {p}_stream ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX {p}_stream_deadline ON {p}_stream (deadline);

CREATE TABLE {p}_stream_producer (
  stream_id   text   NOT NULL,
  producer_id text   NOT NULL,
  epoch       bigint NOT NULL,
  seq         bigint NOT NULL,
  PRIMARY KEY (stream_id, producer_id)
);

-- Whether a live (unexpired) stream holds the id.
CREATE FUNCTION {p}_is_stream(sid text) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM {p}_stream WHERE stream_id = sid
                 AND deadline > clock_timestamp())
$$;
"""
