"""The PostgreSQL schema of Durable Streams (see ``postgres_ds``): one row per stream, its
producers, and one plpgsql function per operation (the twins of ``lua/ds_*.lua``).

A stream's id and a session's share one namespace: a create and a claim of the same id both
take the advisory lock of that id first (``hashtextextended('<p>:' || id, 0)``), so a create
answers ``conflict`` for a session's id and a claim refuses a stream's id (``{p}_is_stream``).
The bytes are rows of ``{p}_stream_data``, one per append (or per copied slice of a fork's
source), keyed by their start offset: an append inserts one row whatever the stream's size,
and a read finds the row holding its offset through the primary key and concatenates slices.
Expiry is the row's ``deadline``: an expired stream is dropped by the next operation that
looks it up (its source's fork count goes down with it), and by the retention sweep; a
soft-deleted source, and a source being deleted, first drops its expired forks
(``{p}_ds_prune``), so that it goes with its last one.

How many rows ``{p}_stream`` has is ``{p}_ds_count`` (the creates add one each) less the rows of
``{p}_ds_freed`` (one inserted by each removal, folded into the count by the next create):
``{p}_ds_held()``. Only a create locks the counter, so creates are serialized and two of them
never both take the last place; when the count is at the limit the create first drops expired
streams (as the sweep does), then counts again.

One lock order, so that no two transitions deadlock: the create takes the advisory lock of
its id, then the counter, then (sweeping at the limit) expired streams, then its own row, then
its source's row. Everything else locks stream rows only, a fork's before its source's (a drop
releases its source, and so on up the chain), never a fork's after its source's but with
``SKIP LOCKED`` (``{p}_ds_prune``, the sweep), and never the counter (a removal inserts into
``{p}_ds_freed``, which waits for no one). A fork names its source by id and by the source's
``born`` (the transaction that created it), so a removed source leaves its forks' rows alone
(locking them would go down the chain), and a new stream of the same id is never released by
the forks of the old one. The one order this leaves open is a create whose own id is a stream
that is a source of the create's source (its answer is ``conflict`` or, expired, a create
over it), which can still meet a release going up; PostgreSQL then aborts one of the two and
the backend retries it.
"""

from __future__ import annotations

__all__ = ["DS_SQL", "DS_TABLES"]

DS_TABLES = ("stream", "stream_data", "stream_producer", "ds_count", "ds_freed")

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
  source_born  bigint,                   -- ... and its born
  born         bigint  NOT NULL DEFAULT txid_current(),  -- the creating transaction
  forks        bigint  NOT NULL DEFAULT 0,       -- forks of it that live
  deadline     timestamptz NOT NULL,     -- expiry: absent to everyone past it
  tail         bigint  NOT NULL DEFAULT 0        -- bytes stored: the next append's offset
);
CREATE INDEX {p}_stream_deadline ON {p}_stream (deadline);
CREATE INDEX {p}_stream_source ON {p}_stream (source) WHERE source IS NOT NULL;

-- How many rows {p}_stream holds (one row; locked by creates only), less {p}_ds_freed's rows.
CREATE TABLE {p}_ds_count (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  n   bigint  NOT NULL
);
INSERT INTO {p}_ds_count VALUES (true, 0);

-- One row per removed stream, until a create folds them into {p}_ds_count.
CREATE TABLE {p}_ds_freed (n bigint NOT NULL DEFAULT 1);

-- The streams held (rows of {p}_stream, expired ones included until dropped).
CREATE FUNCTION {p}_ds_held() RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT (SELECT c.n FROM {p}_ds_count c) - (SELECT coalesce(sum(f.n), 0) FROM {p}_ds_freed f)
$$;

-- The bytes: [start, start + octet_length(body)) of the stream, rows contiguous from 0.
CREATE TABLE {p}_stream_data (
  stream_id text   NOT NULL,
  start     bigint NOT NULL,
  body      bytea  NOT NULL,
  PRIMARY KEY (stream_id, start)
);

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

-- A media type: parameters dropped, lower case, trimmed.
CREATE FUNCTION {p}_ds_media(ct text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT lower(btrim(split_part(ct, ';', 1), ' ' || chr(9)))
$$;

-- Up to lim bytes of the stream from off: the row holding off (found through the key), and
-- slices of it and of the rows after it.
CREATE FUNCTION {p}_ds_bytes(sid text, off bigint, lim bigint) RETURNS bytea
LANGUAGE sql STABLE AS $$
  SELECT coalesce(string_agg(substring(d.body
      FROM (greatest(off - d.start, 0) + 1)::int
      FOR (least(off + lim, d.start + octet_length(d.body)) - greatest(off, d.start))::int),
    ''::bytea ORDER BY d.start), ''::bytea)
  FROM {p}_stream_data d
  WHERE d.stream_id = sid AND d.start < off + lim
    AND d.start >= coalesce((SELECT max(x.start) FROM {p}_stream_data x
                             WHERE x.stream_id = sid AND x.start <= off), 0)
    AND d.start + octet_length(d.body) > off
$$;

-- The reply of every operation: outcome, the stream after it, two numbers the outcome explains
-- (a producer's epoch and seq), and a read's bytes.
CREATE FUNCTION {p}_ds_out(o text, r {p}_stream, a bigint, b bigint, d bytea)
RETURNS TABLE (outcome text, tail bigint, closed boolean, content_type text, ttl bigint,
  expires_text text, expires_ms bigint, created_closed boolean, epoch bigint, seq bigint,
  gone boolean, fork_spec text, data bytea)
LANGUAGE sql IMMUTABLE AS $$
  SELECT o, r.tail, r.closed, r.content_type, r.ttl, r.expires_text, r.expires_ms,
    r.created_closed, a, b, r.gone, r.fork_spec, d
$$;

-- The expiry a write or a touching read restarts: Expires-At, else the TTL, else retention.
CREATE FUNCTION {p}_ds_deadline(ttl bigint, expires_ms bigint, ret_ms bigint)
RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
  SELECT CASE WHEN expires_ms IS NOT NULL THEN to_timestamp(expires_ms / 1000.0)
              WHEN ttl IS NOT NULL THEN clock_timestamp() + ttl * interval '1 second'
              ELSE clock_timestamp() + ret_ms * interval '1 millisecond' END
$$;

-- Remove one stream's rows; the removed row (NULL: there was none).
CREATE FUNCTION {p}_ds_remove(sid text) RETURNS {p}_stream LANGUAGE plpgsql AS $$
DECLARE r {p}_stream;
BEGIN
  DELETE FROM {p}_stream s WHERE s.stream_id = sid RETURNING * INTO r;
  IF NOT FOUND THEN RETURN NULL; END IF;
  INSERT INTO {p}_ds_freed DEFAULT VALUES;
  DELETE FROM {p}_stream_producer WHERE stream_id = sid;
  DELETE FROM {p}_stream_data WHERE stream_id = sid;
  RETURN r;
END $$;

-- Remove a stream; a soft-deleted source whose last fork it was goes with it, and so on up
-- (a source of the same id born later is another stream: not released).
CREATE FUNCTION {p}_ds_drop(sid text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r {p}_stream; left_ bigint; gone_ boolean;
BEGIN
  r := {p}_ds_remove(sid);
  WHILE r.source IS NOT NULL LOOP
    UPDATE {p}_stream SET forks = forks - 1
    WHERE stream_id = r.source AND born = r.source_born
    RETURNING forks, gone INTO left_, gone_;
    IF NOT FOUND OR left_ > 0 OR NOT gone_ THEN RETURN; END IF;
    r := {p}_ds_remove(r.source);
  END LOOP;
END $$;

-- Drop the expired forks of a stream (each releases it: a soft-deleted one may go with them).
-- A fork locked elsewhere is skipped (a source's lock taken before its fork's would go down
-- the chain): its own transaction, or a later lookup, releases it.
CREATE FUNCTION {p}_ds_prune(sid text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE f text;
BEGIN
  FOR f IN SELECT s.stream_id FROM {p}_stream s
    WHERE s.source = sid AND s.deadline <= clock_timestamp()
      AND s.source_born = (SELECT x.born FROM {p}_stream x WHERE x.stream_id = sid)
    FOR UPDATE OF s SKIP LOCKED LOOP
    PERFORM {p}_ds_drop(f);
  END LOOP;
END $$;

-- The locked, unexpired stream row (an expired one is dropped: absent).
CREATE FUNCTION {p}_ds_get(sid text) RETURNS {p}_stream LANGUAGE plpgsql AS $$
DECLARE r {p}_stream;
BEGIN
  SELECT * INTO r FROM {p}_stream s WHERE s.stream_id = sid FOR UPDATE;
  IF NOT FOUND THEN RETURN NULL; END IF;
  IF r.deadline <= clock_timestamp() THEN
    PERFORM {p}_ds_drop(sid);
    RETURN NULL;
  END IF;
  IF r.gone THEN
    PERFORM {p}_ds_prune(sid);
    SELECT * INTO r FROM {p}_stream s WHERE s.stream_id = sid;
    IF NOT FOUND THEN RETURN NULL; END IF;  -- it went with its last (expired) fork
  END IF;
  RETURN r;
END $$;

-- A create's answer when its stream exists: 'exists' when asked the same (and not gone),
-- else 'conflict'.
CREATE FUNCTION {p}_ds_existing(r {p}_stream, ct text, ttl_ bigint, exp_text text,
  closed_ boolean, fork_ text)
RETURNS TABLE (outcome text, tail bigint, closed boolean, content_type text, ttl bigint,
  expires_text text, expires_ms bigint, created_closed boolean, epoch bigint, seq bigint,
  gone boolean, fork_spec text, data bytea)
LANGUAGE sql STABLE AS $$
  SELECT * FROM {p}_ds_out(CASE WHEN NOT r.gone AND r.content_type = ct
      AND r.ttl IS NOT DISTINCT FROM ttl_ AND r.expires_text IS NOT DISTINCT FROM exp_text
      AND r.created_closed = closed_ AND r.fork_spec IS NOT DISTINCT FROM fork_
    THEN 'exists' ELSE 'conflict' END, r, 0, 0, NULL)
$$;

-- Create (a fork: src, at (NULL: the source's tail), sub), or compare with the existing one.
-- Outcomes: created, exists, conflict (no stream when a session holds the id),
-- source_not_found, source_gone, bad_fork_offset, full (max_ streams held; no stream).
CREATE FUNCTION {p}_ds_create(sid text, ct text, ttl_ bigint, exp_text text, exp_ms bigint,
  closed_ boolean, body bytea, ret_ms bigint, fork_ text, src text, at bigint, sub bigint,
  max_ bigint)
RETURNS TABLE (outcome text, tail bigint, closed boolean, content_type text, ttl bigint,
  expires_text text, expires_ms bigint, created_closed boolean, epoch bigint, seq bigint,
  gone boolean, fork_spec text, data bytea)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  r {p}_stream; s {p}_stream; after bytea; cut bigint := 0; copied bigint := 0;
  nl int; is_json boolean; held bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('{p}:' || sid, 0));
  IF src IS NULL THEN
    -- Already there (the id's lock held: no create of it runs): answered without the counter.
    SELECT * INTO r FROM {p}_stream st WHERE st.stream_id = sid;
    IF FOUND AND r.deadline > clock_timestamp() AND NOT r.gone THEN
      RETURN QUERY SELECT * FROM {p}_ds_existing(r, ct, ttl_, exp_text, closed_, fork_); RETURN;
    END IF;
  END IF;
  -- The lock order (see the module): the counter, expired streams, this row, the source's.
  -- (The counter first: {p}_ds_freed's rows are only deleted under it.)
  PERFORM 1 FROM {p}_ds_count c FOR UPDATE;
  WITH f AS (DELETE FROM {p}_ds_freed RETURNING n)
  UPDATE {p}_ds_count c SET n = c.n - (SELECT coalesce(sum(f.n), 0) FROM f) RETURNING c.n INTO held;
  IF max_ IS NOT NULL AND held >= max_ THEN
    PERFORM {p}_ds_sweep(held);
    WITH f AS (DELETE FROM {p}_ds_freed RETURNING n)
    UPDATE {p}_ds_count c SET n = c.n - (SELECT coalesce(sum(f.n), 0) FROM f) RETURNING c.n INTO held;
  END IF;
  r := {p}_ds_get(sid);
  IF src IS NOT NULL THEN
    s := {p}_ds_get(src);
    IF s.stream_id IS NULL THEN
      RETURN QUERY SELECT * FROM {p}_ds_out('source_not_found', NULL, 0, 0, NULL); RETURN;
    END IF;
    IF s.gone THEN RETURN QUERY SELECT * FROM {p}_ds_out('source_gone', NULL, 0, 0, NULL); RETURN; END IF;
    IF coalesce(ct, '') <> '' AND ct <> s.content_type THEN
      RETURN QUERY SELECT * FROM {p}_ds_out('conflict', NULL, 0, 0, NULL); RETURN;
    END IF;
    at := coalesce(at, s.tail);
    is_json := {p}_ds_media(s.content_type) = 'application/json';
    IF at < 0 OR at > s.tail THEN
      RETURN QUERY SELECT * FROM {p}_ds_out('bad_fork_offset', NULL, 0, 0, NULL); RETURN;
    END IF;
    IF is_json AND at > 0 THEN
      IF {p}_ds_bytes(src, at - 1, 1) <> '\x0a'::bytea THEN
        RETURN QUERY SELECT * FROM {p}_ds_out('bad_fork_offset', NULL, 0, 0, NULL); RETURN;
      END IF;
    END IF;
    IF sub > 0 THEN
      IF at >= s.tail THEN
        RETURN QUERY SELECT * FROM {p}_ds_out('bad_fork_offset', NULL, 0, 0, NULL); RETURN;
      END IF;
      IF NOT is_json THEN
        IF sub > s.tail - at THEN
          RETURN QUERY SELECT * FROM {p}_ds_out('bad_fork_offset', NULL, 0, 0, NULL); RETURN;
        END IF;
        cut := sub;
      ELSE
        after := {p}_ds_bytes(src, at, s.tail - at);
        FOR k IN 1 .. sub LOOP
          nl := position('\x0a'::bytea IN substring(after FROM (cut + 1)::int));
          IF nl = 0 THEN
            RETURN QUERY SELECT * FROM {p}_ds_out('bad_fork_offset', NULL, 0, 0, NULL); RETURN;
          END IF;
          cut := cut + nl;
        END LOOP;
      END IF;
    END IF;
    copied := at + cut;
    ct := s.content_type;
    IF ttl_ IS NULL AND exp_ms IS NULL THEN
      ttl_ := s.ttl; exp_text := s.expires_text; exp_ms := s.expires_ms;
    END IF;
  END IF;
  IF EXISTS (SELECT 1 FROM {p}_session ss WHERE ss.session_id = sid
             AND ss.expires_at > clock_timestamp()) THEN
    RETURN QUERY SELECT * FROM {p}_ds_out('conflict', NULL, 0, 0, NULL); RETURN;
  END IF;
  IF r.stream_id IS NOT NULL THEN
    RETURN QUERY SELECT * FROM {p}_ds_existing(r, ct, ttl_, exp_text, closed_, fork_); RETURN;
  END IF;
  IF max_ IS NOT NULL AND held >= max_ THEN
    RETURN QUERY SELECT * FROM {p}_ds_out('full', NULL, 0, 0, NULL); RETURN;
  END IF;
  UPDATE {p}_ds_count SET n = n + 1;
  INSERT INTO {p}_stream AS st (stream_id, content_type, ttl, expires_text, expires_ms,
    created_closed, fork_spec, closed, source, source_born, deadline, tail)
  VALUES (sid, ct, ttl_, exp_text, exp_ms, closed_, fork_, closed_, src, s.born,
    {p}_ds_deadline(ttl_, exp_ms, ret_ms), copied + octet_length(body));
  IF copied > 0 THEN
    -- The source's prefix, row by row (the last one cut): it never changes in the source.
    INSERT INTO {p}_stream_data
    SELECT sid, d.start, substring(d.body FROM 1 FOR least(octet_length(d.body), copied - d.start)::int)
    FROM {p}_stream_data d WHERE d.stream_id = src AND d.start < copied;
  END IF;
  IF octet_length(body) > 0 THEN INSERT INTO {p}_stream_data VALUES (sid, copied, body); END IF;
  IF src IS NOT NULL THEN UPDATE {p}_stream SET forks = forks + 1 WHERE stream_id = src; END IF;
  r := {p}_ds_get(sid);
  RETURN QUERY SELECT * FROM {p}_ds_out('created', r, 0, 0, NULL);
END $$;

-- One append (see _ds.DsOutcome for the order of the checks); 'S <sid> 0:<tail>' on data.
CREATE FUNCTION {p}_ds_append(sid text, body bytea, media text, sseq bytea, pid text,
  e bigint, ps bigint, close_ boolean, ret_ms bigint)
RETURNS TABLE (outcome text, tail bigint, closed boolean, content_type text, ttl bigint,
  expires_text text, expires_ms bigint, created_closed boolean, epoch bigint, seq bigint,
  gone boolean, fork_spec text, data bytea)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE r {p}_stream := {p}_ds_get(sid); ep bigint := 0; pq bigint := 0; se bigint; sl bigint;
  o text;
BEGIN
  IF r.stream_id IS NULL THEN RETURN; END IF;
  IF r.gone THEN RETURN QUERY SELECT * FROM {p}_ds_out('gone', r, 0, 0, NULL); RETURN; END IF;
  IF pid IS NOT NULL THEN
    SELECT p.epoch, p.seq INTO se, sl FROM {p}_stream_producer p
    WHERE p.stream_id = sid AND p.producer_id = pid;
    IF NOT FOUND THEN
      IF ps <> 0 THEN o := 'seq_gap'; ep := e; pq := 0; ELSE ep := e; pq := 0; END IF;
    ELSIF e < se THEN o := 'stale_epoch'; ep := se; pq := sl;
    ELSIF e > se THEN
      IF ps <> 0 THEN o := 'bad_epoch_seq'; ep := se; pq := sl; ELSE ep := e; pq := 0; END IF;
    ELSIF ps <= sl THEN o := 'duplicate'; ep := se; pq := sl;
    ELSIF ps <> sl + 1 THEN o := 'seq_gap'; ep := se; pq := sl + 1;
    ELSE ep := se; pq := ps;
    END IF;
    IF o IS NOT NULL THEN RETURN QUERY SELECT * FROM {p}_ds_out(o, r, ep, pq, NULL); RETURN; END IF;
  END IF;
  IF r.closed THEN
    -- Closing again is idempotent, unless it carries data or is some producer's batch.
    o := CASE WHEN octet_length(body) > 0 OR NOT close_ OR pid IS NOT NULL
              THEN 'closed' ELSE 'appended' END;
    RETURN QUERY SELECT * FROM {p}_ds_out(o, r, ep, pq, NULL); RETURN;
  END IF;
  IF media IS NOT NULL AND media <> {p}_ds_media(r.content_type) THEN
    RETURN QUERY SELECT * FROM {p}_ds_out('type_mismatch', r, ep, pq, NULL); RETURN;
  END IF;
  IF sseq IS NOT NULL AND r.seq IS NOT NULL AND sseq <= r.seq THEN
    RETURN QUERY SELECT * FROM {p}_ds_out('stream_seq', r, ep, pq, NULL); RETURN;
  END IF;
  IF pid IS NOT NULL THEN
    INSERT INTO {p}_stream_producer VALUES (sid, pid, ep, pq)
    ON CONFLICT (stream_id, producer_id) DO UPDATE SET epoch = ep, seq = pq;
  END IF;
  IF octet_length(body) > 0 THEN INSERT INTO {p}_stream_data VALUES (sid, r.tail, body); END IF;
  UPDATE {p}_stream st SET
    tail = st.tail + octet_length(body), closed = st.closed OR close_,
    seq = coalesce(sseq, st.seq), deadline = {p}_ds_deadline(st.ttl, st.expires_ms, ret_ms)
  WHERE st.stream_id = sid;
  r.tail := r.tail + octet_length(body);
  r.closed := r.closed OR close_;
  PERFORM {p}_notify('{p}_data', 'S', sid, '0:' || r.tail);
  RETURN QUERY SELECT * FROM {p}_ds_out('appended', r, ep, pq, NULL);
END $$;

-- The record and up to lim bytes from off (no row: not found or expired); a soft-deleted
-- stream answers its record and no bytes. touch restarts the expiry window.
CREATE FUNCTION {p}_ds_read(sid text, off bigint, lim bigint, touch boolean, ret_ms bigint)
RETURNS TABLE (outcome text, tail bigint, closed boolean, content_type text, ttl bigint,
  expires_text text, expires_ms bigint, created_closed boolean, epoch bigint, seq bigint,
  gone boolean, fork_spec text, data bytea)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE r {p}_stream; d bytea := ''::bytea;
BEGIN
  SELECT * INTO r FROM {p}_stream s
  WHERE s.stream_id = sid AND s.deadline > clock_timestamp();
  IF NOT FOUND THEN RETURN; END IF;
  IF r.gone THEN
    r := {p}_ds_get(sid);  -- its expired forks dropped: it may go with them
    IF r.stream_id IS NULL THEN RETURN; END IF;
  END IF;
  IF NOT r.gone THEN
    IF touch THEN
      UPDATE {p}_stream s SET deadline = {p}_ds_deadline(s.ttl, s.expires_ms, ret_ms)
      WHERE s.stream_id = sid;
    END IF;
    -- Bounded by the tail read above: bytes below a tail never change.
    IF lim > 0 AND off < r.tail THEN d := {p}_ds_bytes(sid, off, least(lim, r.tail - off)); END IF;
  END IF;
  RETURN QUERY SELECT * FROM {p}_ds_out('ok', r, 0, 0, coalesce(d, ''::bytea));
END $$;

-- Delete: 'deleted' (its source loses a fork), 'soft' (forks of it live: data and producers
-- go, the record answers gone), 'gone' (already soft-deleted), 'not_found'; 'D' on data.
CREATE FUNCTION {p}_ds_delete(sid text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r {p}_stream := {p}_ds_get(sid); o text;
BEGIN
  IF r.stream_id IS NULL THEN RETURN 'not_found'; END IF;
  IF r.gone THEN RETURN 'gone'; END IF;
  IF r.forks > 0 THEN
    PERFORM {p}_ds_prune(sid);
    SELECT * INTO r FROM {p}_stream s WHERE s.stream_id = sid;
  END IF;
  IF r.forks > 0 THEN
    UPDATE {p}_stream SET gone = true, tail = 0 WHERE stream_id = sid;
    DELETE FROM {p}_stream_producer WHERE stream_id = sid;
    DELETE FROM {p}_stream_data WHERE stream_id = sid;
    o := 'soft';
  ELSE
    PERFORM {p}_ds_drop(sid);
    o := 'deleted';
  END IF;
  PERFORM {p}_notify('{p}_data', 'D', sid, '0');
  RETURN o;
END $$;

-- Drop up to n expired streams (the retention sweep); how many.
CREATE FUNCTION {p}_ds_sweep(n bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE sid text; k bigint := 0;
BEGIN
  FOR sid IN SELECT stream_id FROM {p}_stream WHERE deadline <= clock_timestamp()
    ORDER BY deadline LIMIT n FOR UPDATE SKIP LOCKED LOOP
    PERFORM {p}_ds_drop(sid);
    k := k + 1;
  END LOOP;
  RETURN k;
END $$;
"""
