"""The PostgreSQL schema of the ``on_finish`` settle marks (see ``postgres_finish``).

The session row gains the mark of its current generation: ``settled`` (the generation whose
hook ran), the claim on running it (``finisher``: token, ``finisher_gen``, ``finisher_until``
on the database clock) and ``fin`` (the generation ``expect_finish`` marked as expecting its
hook). All name their generation, so a claim of a new generation needs not clear them: a mark
of an older generation is simply not this one's. ``{p}_finish_index`` holds the generations
whose hook has not run, with when each was last handed out (``visited_at``). Claim and settle
lock the session row first, as every transition does.

Kept generations (the twin of ``kept``/``klog`` in ``claim.lua``): a claim that replaces a
generation marked ``fin`` and not ``settled`` copies its record into ``{p}_kept`` and leaves
its ``{p}_log`` rows in place under their generation (the log is keyed by generation, so
nothing moves; every read of the current generation skips lower generations). A session keeps
the newest ``KEPT_GENERATIONS`` at most; settle, delete, the session's expiry and the
retention sweep (``{p}_kept.expires_at``: the last replacing claim + retention) drop them.
"""

from __future__ import annotations

from .base import KEPT_GENERATIONS

__all__ = ["FINISH_SQL", "FINISH_TABLES"]

FINISH_TABLES = ("finish_index", "kept")

FINISH_SQL = r"""
ALTER TABLE {p}_session
  ADD COLUMN settled        bigint,       -- the generation whose on_finish hook ran
  ADD COLUMN finisher       text,         -- the token that runs it ...
  ADD COLUMN finisher_gen   bigint,       -- ... for this generation ...
  ADD COLUMN finisher_until timestamptz,  -- ... until then
  ADD COLUMN fin            bigint;       -- the generation expecting its hook (expect_finish)

-- Generations whose hook has not run, and when each was last handed out by unsettled.
CREATE TABLE {p}_finish_index (
  session_id text        NOT NULL,
  generation bigint      NOT NULL,
  visited_at timestamptz NOT NULL,
  PRIMARY KEY (session_id, generation)
);
CREATE INDEX {p}_finish_index_visited ON {p}_finish_index (visited_at);

-- Replaced generations kept for their hook: the record when it was replaced, the claim on
-- running its hook; its log rows stay in {p}_log under its generation.
CREATE TABLE {p}_kept (
  session_id     text        NOT NULL,
  generation     bigint      NOT NULL,
  state          text        NOT NULL,
  reason         text,
  metadata       bytea,
  n              bigint      NOT NULL,
  created_ms     bigint      NOT NULL,
  updated_ms     bigint      NOT NULL,
  finisher       text,
  finisher_until timestamptz,
  expires_at     timestamptz NOT NULL,
  PRIMARY KEY (session_id, generation)
);
CREATE INDEX {p}_kept_expires ON {p}_kept (expires_at);

-- Drop kept generation gen of sid: its record and its log rows.
CREATE FUNCTION {p}_drop_kept(sid text, gen bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM {p}_kept WHERE session_id = sid AND generation = gen;
  IF FOUND THEN
    DELETE FROM {p}_log WHERE session_id = sid AND generation = gen;
  END IF;
END $$;

-- Called by {p}_claim (session row locked) before it replaces the generation the row holds:
-- keep it if its hook is expected and unsettled; every kept one of the session now expires
-- ret_ms from now; the newest KEPT_GENERATIONS stay, expired ones go.
CREATE FUNCTION {p}_keep(sid text, ret_ms bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r {p}_session; g bigint;
BEGIN
  FOR g IN SELECT k.generation FROM {p}_kept k
    WHERE k.session_id = sid AND k.expires_at <= clock_timestamp() LOOP
    PERFORM {p}_drop_kept(sid, g);
  END LOOP;
  SELECT * INTO r FROM {p}_session WHERE session_id = sid;
  IF r.fin = r.generation AND r.settled IS DISTINCT FROM r.generation THEN
    INSERT INTO {p}_kept VALUES (sid, r.generation, r.state, r.reason, r.metadata, r.n,
      r.created_ms, r.updated_ms,
      CASE WHEN r.finisher_gen = r.generation THEN r.finisher END,
      CASE WHEN r.finisher_gen = r.generation THEN r.finisher_until END,
      clock_timestamp() + ret_ms * interval '1 millisecond')
    ON CONFLICT DO NOTHING;
  END IF;
  UPDATE {p}_kept SET expires_at = clock_timestamp() + ret_ms * interval '1 millisecond'
  WHERE session_id = sid;
  FOR g IN SELECT k.generation FROM {p}_kept k WHERE k.session_id = sid
    ORDER BY k.generation DESC OFFSET {kept_max} LOOP
    PERFORM {p}_drop_kept(sid, g);
  END LOOP;
END $$;

-- Mark generation gen as expecting its hook (if the session holds it) and index it.
CREATE FUNCTION {p}_finish_expect(sid text, gen bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  UPDATE {p}_session SET fin = gen WHERE session_id = sid AND generation = gen;
  INSERT INTO {p}_finish_index VALUES (sid, gen, clock_timestamp()) ON CONFLICT DO NOTHING;
END $$;

-- Claim running the hook of generation gen (current or kept) for ttl_ms: 'claimed', 'busy',
-- 'settled' or 'gone'. A kept generation is never settled: settling drops it.
CREATE FUNCTION {p}_finish_claim(sid text, gen bigint, tok text, ttl_ms bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid); k {p}_kept;
BEGIN
  IF r.session_id IS NULL THEN RETURN 'gone'; END IF;
  IF r.generation <> gen THEN
    SELECT * INTO k FROM {p}_kept WHERE session_id = sid AND generation = gen
      AND expires_at > clock_timestamp();
    IF NOT FOUND THEN RETURN 'gone'; END IF;
    IF k.finisher <> tok AND k.finisher_until > clock_timestamp() THEN RETURN 'busy'; END IF;
    UPDATE {p}_kept SET finisher = tok,
      finisher_until = clock_timestamp() + ttl_ms * interval '1 millisecond'
    WHERE session_id = sid AND generation = gen;
    RETURN 'claimed';
  END IF;
  IF r.settled = gen THEN RETURN 'settled'; END IF;
  IF r.finisher_gen = gen AND r.finisher <> tok AND r.finisher_until > clock_timestamp() THEN
    RETURN 'busy';
  END IF;
  UPDATE {p}_session SET finisher = tok, finisher_gen = gen,
    finisher_until = clock_timestamp() + ttl_ms * interval '1 millisecond'
  WHERE session_id = sid;
  RETURN 'claimed';
END $$;

-- Mark the hook of generation gen as run (if the session holds it), or drop it if the session
-- kept it, and drop its index entry, in one transaction.
CREATE FUNCTION {p}_finish_settle(sid text, gen bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid);
BEGIN
  IF r.session_id IS NOT NULL AND r.generation = gen THEN
    UPDATE {p}_session SET settled = gen, finisher = NULL, finisher_gen = NULL,
      finisher_until = NULL
    WHERE session_id = sid;
  ELSIF r.session_id IS NOT NULL THEN
    PERFORM {p}_drop_kept(sid, gen);
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
""".replace("{kept_max}", str(KEPT_GENERATIONS))
