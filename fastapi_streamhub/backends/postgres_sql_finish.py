"""The PostgreSQL schema of the ``on_finish`` settle marks (see ``postgres_finish``).

The session row gains the mark of its current generation: ``settled`` (the generation whose
hook ran) and the claim on running it (``finisher``: token, ``finisher_gen``, ``finisher_until``
on the database clock). Both name their generation, so a claim of a new generation needs not
clear them: a mark of an older generation is simply not this one's. ``{p}_finish_index`` holds
the generations whose hook has not run, with when each was last handed out (``visited_at``).
Claim and settle lock the session row first, as every transition does.
"""

from __future__ import annotations

__all__ = ["FINISH_SQL", "FINISH_TABLES"]

FINISH_TABLES = ("finish_index",)

FINISH_SQL = r"""
ALTER TABLE {p}_session
  ADD COLUMN settled        bigint,       -- the generation whose on_finish hook ran
  ADD COLUMN finisher       text,         -- the token that runs it ...
  ADD COLUMN finisher_gen   bigint,       -- ... for this generation ...
  ADD COLUMN finisher_until timestamptz;  -- ... until then

-- Generations whose hook has not run, and when each was last handed out by unsettled.
CREATE TABLE {p}_finish_index (
  session_id text        NOT NULL,
  generation bigint      NOT NULL,
  visited_at timestamptz NOT NULL,
  PRIMARY KEY (session_id, generation)
);
CREATE INDEX {p}_finish_index_visited ON {p}_finish_index (visited_at);

-- Claim running the hook of generation gen for ttl_ms: 'claimed', 'busy', 'settled' or 'gone'.
CREATE FUNCTION {p}_finish_claim(sid text, gen bigint, tok text, ttl_ms bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid);
BEGIN
  IF r.session_id IS NULL OR r.generation <> gen THEN RETURN 'gone'; END IF;
  IF r.settled = gen THEN RETURN 'settled'; END IF;
  IF r.finisher_gen = gen AND r.finisher <> tok AND r.finisher_until > clock_timestamp() THEN
    RETURN 'busy';
  END IF;
  UPDATE {p}_session SET finisher = tok, finisher_gen = gen,
    finisher_until = clock_timestamp() + ttl_ms * interval '1 millisecond'
  WHERE session_id = sid;
  RETURN 'claimed';
END $$;

-- Mark the hook of generation gen as run (if the session holds it) and drop its index entry,
-- in one transaction.
CREATE FUNCTION {p}_finish_settle(sid text, gen bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid);
BEGIN
  IF r.session_id IS NOT NULL AND r.generation = gen THEN
    UPDATE {p}_session SET settled = gen, finisher = NULL, finisher_gen = NULL,
      finisher_until = NULL
    WHERE session_id = sid;
  END IF;
  DELETE FROM {p}_finish_index WHERE session_id = sid AND generation = gen;
END $$;

-- Up to n index entries not handed out for idle_ms, oldest first, each handed out now.
-- SKIP LOCKED: instances sweeping at the same time take different entries.
CREATE FUNCTION {p}_finish_take(n bigint, idle_ms bigint)
RETURNS TABLE (session_id text, generation bigint) LANGUAGE sql AS $$
  WITH due AS (
    SELECT f.session_id, f.generation, f.visited_at FROM {p}_finish_index f
    WHERE f.visited_at <= clock_timestamp() - idle_ms * interval '1 millisecond'
    ORDER BY f.visited_at LIMIT n FOR UPDATE SKIP LOCKED
  ), taken AS (
    UPDATE {p}_finish_index f SET visited_at = clock_timestamp() FROM due
    WHERE f.session_id = due.session_id AND f.generation = due.generation
    RETURNING f.session_id, f.generation, due.visited_at AS was
  )
  SELECT taken.session_id, taken.generation FROM taken ORDER BY was, session_id
$$;
"""
