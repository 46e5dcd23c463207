"""The PostgreSQL schema, continued (see ``postgres_sql``): cancel, delete, steering messages,
compaction, fan-in and the retention sweep, one plpgsql function each. Each locks the session
row first (``{p}_lock``), as every transition does."""

from __future__ import annotations

__all__ = ["MORE_FUNCTIONS"]

MORE_FUNCTIONS = r"""
CREATE FUNCTION {p}_cancel(sid text, ret_ms bigint) RETURNS TABLE (
  generation bigint, state text, reason text, n bigint, metadata bytea, created_ms bigint,
  updated_ms bigint, cancel boolean, lease_ms bigint, now_ms bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE r {p}_session := {p}_lock(sid);
BEGIN
  IF r.session_id IS NULL THEN RETURN; END IF;
  IF r.state = 'active' AND NOT {p}_lapse(r, ret_ms, 'lease_expired') THEN
    UPDATE {p}_session SET cancel = true WHERE session_id = sid;
    PERFORM {p}_notify('{p}_ctl', 'X', sid, r.generation::text);
  END IF;
  SELECT * INTO r FROM {p}_session WHERE session_id = sid;
  RETURN QUERY SELECT * FROM {p}_describe(r);
END $$;

CREATE FUNCTION {p}_delete(sid text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE r {p}_session;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('{p}:' || sid, 0));
  r := {p}_lock(sid);
  DELETE FROM {p}_message_key WHERE session_id = sid;
  IF r.session_id IS NULL THEN RETURN false; END IF;
  PERFORM {p}_notify('{p}_ctl', 'D', sid, r.generation::text);
  PERFORM {p}_notify('{p}_data', 'D', sid, r.generation::text);
  DELETE FROM {p}_log WHERE session_id = sid;
  DELETE FROM {p}_part WHERE session_id = sid;
  DELETE FROM {p}_message WHERE session_id = sid;
  DELETE FROM {p}_kept WHERE session_id = sid;
  DELETE FROM {p}_session WHERE session_id = sid;
  RETURN true;
END $$;

-- A steering message. Returns NULL for an unknown session (nothing is created), else
-- (outcome, generation, detail, duplicate): ('ok', gen, seq), ('closed', gen, state) or
-- ('full', gen, 'count' | 'bytes').
CREATE FUNCTION {p}_message_send(sid text, blob bytea, k text, ret_ms bigint, max_n bigint,
  max_bytes bigint) RETURNS TABLE (outcome text, generation bigint, detail text, duplicate boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE r {p}_session := {p}_lock(sid); seen {p}_message_key; seq bigint;
BEGIN
  IF r.session_id IS NULL THEN RETURN; END IF;
  IF k <> '' THEN
    SELECT * INTO seen FROM {p}_message_key mk WHERE mk.session_id = sid AND mk.key = k
      AND mk.expires_at > clock_timestamp();
    IF FOUND THEN
      RETURN QUERY SELECT 'ok'::text, seen.generation, seen.seq::text, true; RETURN;
    END IF;
  END IF;
  IF {p}_lapse(r, ret_ms, 'lease_expired') THEN r.state := 'failed'; END IF;
  IF r.state <> 'active' THEN
    RETURN QUERY SELECT 'closed'::text, r.generation, r.state, false; RETURN;
  END IF;
  IF r.q >= max_n THEN RETURN QUERY SELECT 'full'::text, r.generation, 'count'::text, false; RETURN; END IF;
  IF r.qb + octet_length(blob) > max_bytes THEN
    RETURN QUERY SELECT 'full'::text, r.generation, 'bytes'::text, false; RETURN;
  END IF;
  seq := r.q + 1;
  UPDATE {p}_session s SET q = seq, qb = s.qb + octet_length(blob) WHERE s.session_id = sid;
  INSERT INTO {p}_message VALUES (sid, r.generation, seq, blob);
  IF k <> '' THEN
    INSERT INTO {p}_message_key VALUES (sid, k, r.generation, seq,
      clock_timestamp() + ret_ms * interval '1 millisecond')
    ON CONFLICT (session_id, key) DO UPDATE SET generation = excluded.generation,
      seq = excluded.seq, expires_at = excluded.expires_at;
  END IF;
  PERFORM {p}_notify('{p}_ctl', 'G', sid, r.generation || ':' || seq);
  RETURN QUERY SELECT 'ok'::text, r.generation, seq::text, false;
END $$;

-- Replace a finished generation's log by its folded form, if it is still the log the client
-- read (same generation, finished, not folded yet, same row count and top row).
CREATE FUNCTION {p}_compact(sid text, gen bigint, rows_read bigint, end_last bigint,
  lasts bigint[], bodies bytea[]) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid); have bigint; top bigint;
BEGIN
  IF r.session_id IS NULL OR r.generation <> gen OR r.state = 'active'
     OR r.compacted IS NOT DISTINCT FROM gen THEN RETURN false; END IF;
  SELECT count(*), max(last_offset) INTO have, top FROM {p}_log
  WHERE session_id = sid AND generation = gen;
  IF have <> rows_read OR top IS DISTINCT FROM end_last THEN RETURN false; END IF;
  DELETE FROM {p}_log WHERE session_id = sid AND generation = gen AND kind = 'c';
  INSERT INTO {p}_log SELECT sid, gen, l, 'c', b FROM unnest(lasts, bodies) AS u(l, b);
  UPDATE {p}_session SET compacted = gen WHERE session_id = sid;
  RETURN true;
END $$;

-- Fan-in. Each returns '' or a refusal; a part's own refusal is 'part <reason>'.
CREATE FUNCTION {p}_admit(sid text, gen bigint, nm text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid); why text := {p}_refusal(r, gen);
BEGIN
  IF why <> '' THEN RETURN why; END IF;
  INSERT INTO {p}_part (session_id, name) VALUES (sid, nm), (sid, '') ON CONFLICT DO NOTHING;
  RETURN '';
END $$;

CREATE FUNCTION {p}_join(sid text, gen bigint, nm text, tok text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid); why text := {p}_refusal(r, gen); pt {p}_part;
BEGIN
  IF why <> '' THEN RETURN why; END IF;
  SELECT * INTO pt FROM {p}_part WHERE session_id = sid AND name = nm;
  IF NOT FOUND THEN RETURN 'part not_admitted'; END IF;
  IF pt.state <> 'o' THEN RETURN 'part part_ended'; END IF;
  IF pt.token <> tok THEN
    UPDATE {p}_part SET token = tok, seq = 0, first_offset = 0
    WHERE session_id = sid AND name = nm;
  END IF;
  RETURN '';
END $$;

-- One batch of a fan-in producer: the offsets are assigned here, after the generation's last.
-- Returns 'ok <first offset>' or a refusal.
CREATE FUNCTION {p}_append_shared(sid text, gen bigint, nm text, tok text, sq bigint,
  cnt bigint, body bytea, maxlen bigint, note_head text, note_tail text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid); why text := {p}_refusal(r, gen); pt {p}_part;
  first bigint; last bigint;
BEGIN
  IF why <> '' THEN RETURN why; END IF;
  SELECT * INTO pt FROM {p}_part WHERE session_id = sid AND name = nm;
  IF NOT FOUND THEN RETURN 'part not_admitted'; END IF;
  IF pt.token <> tok THEN RETURN 'part replaced'; END IF;
  IF pt.seq = sq THEN RETURN 'ok ' || pt.first_offset; END IF;
  IF pt.state <> 'o' THEN RETURN 'part part_ended'; END IF;
  first := r.n + 1;
  last := r.n + cnt;
  UPDATE {p}_session SET n = last, updated_ms = {p}_now_ms() WHERE session_id = sid;
  INSERT INTO {p}_log VALUES (sid, gen, last, 'c', body);
  IF maxlen > 0 AND last > maxlen THEN
    DELETE FROM {p}_log WHERE session_id = sid AND generation = gen
      AND last_offset < last - maxlen + 1;
  END IF;
  UPDATE {p}_part SET seq = sq, first_offset = first WHERE session_id = sid AND name = nm;
  IF note_tail IS NULL THEN
    PERFORM pg_notify('{p}_data', {p}_rec('S', sid, gen || ':' || last));
  ELSE
    PERFORM pg_notify('{p}_data',
      {p}_rec('C', sid, gen || ':' || first || ':' || note_tail));
  END IF;
  RETURN 'ok ' || first;
END $$;

CREATE FUNCTION {p}_end_part(sid text, gen bigint, nm text, tok text, last bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid); why text; pt {p}_part; ended "char" := 'e';
BEGIN
  IF r.generation = gen AND r.state <> 'active' THEN RETURN ''; END IF;
  why := {p}_refusal(r, gen);
  IF why <> '' THEN RETURN why; END IF;
  SELECT * INTO pt FROM {p}_part WHERE session_id = sid AND name = nm;
  IF NOT FOUND THEN RETURN 'part not_admitted'; END IF;
  IF pt.token <> tok THEN RETURN 'part replaced'; END IF;
  IF pt.state = 'o' THEN
    IF last IS NOT NULL AND pt.seq <> last THEN
      ended := 'x';
      UPDATE {p}_session SET short = coalesce(short, nm) WHERE session_id = sid;
    END IF;
    UPDATE {p}_part SET state = ended WHERE session_id = sid AND name = nm;
  END IF;
  RETURN '';
END $$;

-- Retention: delete up to `batch` expired sessions (one sweeper at a time); how many.
CREATE FUNCTION {p}_sweep(batch int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE gone text[];
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtextextended('{p}:sweep', 0)) THEN RETURN 0; END IF;
  WITH d AS (
    DELETE FROM {p}_session WHERE session_id IN (
      SELECT session_id FROM {p}_session WHERE expires_at < clock_timestamp()
      ORDER BY expires_at LIMIT batch FOR UPDATE SKIP LOCKED)
    RETURNING session_id)
  SELECT coalesce(array_agg(session_id), '{}') INTO gone FROM d;
  DELETE FROM {p}_log WHERE session_id = ANY(gone);
  DELETE FROM {p}_part WHERE session_id = ANY(gone);
  DELETE FROM {p}_message WHERE session_id = ANY(gone);
  DELETE FROM {p}_kept WHERE session_id = ANY(gone);
  -- Kept generations past their retention (their sessions live on), with their log rows; the
  -- condition is checked again on a row a claim just renewed.
  WITH k AS (
    DELETE FROM {p}_kept WHERE (session_id, generation) IN (
      SELECT session_id, generation FROM {p}_kept WHERE expires_at < clock_timestamp()
      ORDER BY expires_at LIMIT batch) AND expires_at < clock_timestamp()
    RETURNING session_id, generation)
  DELETE FROM {p}_log l USING k WHERE l.session_id = k.session_id
    AND l.generation = k.generation;
  DELETE FROM {p}_message_key WHERE expires_at < clock_timestamp();
  RETURN coalesce(array_length(gone, 1), 0);
END $$;
"""
