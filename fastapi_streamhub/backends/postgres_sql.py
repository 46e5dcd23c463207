"""The PostgreSQL schema of :class:`~fastapi_streamhub.backends.postgres.PostgresBackend`.

One place holds every table and every transition: each state transition is one plpgsql
function (the twin of a Lua script of the Redis backend), so one call is one round trip and one
transaction. The rule every function follows: **lock the session row first** (``FOR UPDATE``,
or an advisory lock for an id that may not exist yet), then read and write. READ COMMITTED
gives each statement its own snapshot, so atomicity comes from that lock, as a Lua script's
comes from Redis running one script at a time. Times come from the database clock
(``clock_timestamp()``), so hubs cannot disagree about a lease.

Names are ``<p>_<name>``, ``<p>`` derived from the hub's ``key_prefix`` (:func:`prefix_name`);
``{p}`` in the text below is replaced by it. Refusals are values, never errors, so one refused
batch never aborts the other batches of the same writer round trip.
"""

from __future__ import annotations

import hashlib
import re

from .postgres_sql_ds import DS_SQL, DS_TABLES
from .postgres_sql_finish import FINISH_SQL, FINISH_TABLES
from .postgres_sql_more import MORE_FUNCTIONS

__all__ = ["SCHEMA_VERSION", "TABLES", "grants_sql", "prefix_name", "schema_sql"]

# 2: the on_finish settle marks (postgres_sql_finish), turns, Durable Streams (postgres_sql_ds).
# 3: generations kept for their on_finish hook ({p}_kept, {p}_session.fin).
# 4: Durable Streams limits: {p}_ds_count (streams held), {p}_stream_source, forks released
#    when they expire ({p}_ds_prune), {p}_ds_create's max_streams argument.
#    Also {p}_append stores a batch that follows a hole (chunks a failover lost) and says so.
# 5: {p}_append stores the batches that continue their generation in one UPDATE and one
#    INSERT (the same answers; 15 % less server CPU per chunk under 1,000 paced streams).
# 6: {p}_renew extends the running leases in one UPDATE, {p}_expire reads them without a lock
#    (the same answers; neither holds the writers of 1,000 sessions for tens of ms).
SCHEMA_VERSION = 6

_SAFE = re.compile(r"[a-z_][a-z0-9_]{0,39}")


def prefix_name(key_prefix: str) -> str:
    """The SQL name prefix for ``key_prefix``: itself when it is a short lowercase identifier,
    else a readable part plus a hash (PostgreSQL names are at most 63 bytes)."""
    if _SAFE.fullmatch(key_prefix):
        return key_prefix
    readable = re.sub(r"[^a-z0-9_]", "_", key_prefix.lower())[:24]
    digest = hashlib.sha1(key_prefix.encode()).hexdigest()[:8]
    return f"{readable}_{digest}" if readable[:1].isalpha() else f"p{readable}_{digest}"


TABLES = ("schema", "session", "log", "part", "message", "message_key", *FINISH_TABLES, *DS_TABLES)


def grants_sql(p: str, role: str, schema: str = "public") -> str:
    """The least a runtime role needs once the schema exists (created by another role): use the
    schema, read and write the tables, call the functions. No DDL, no superuser, no ownership;
    LISTEN/NOTIFY and advisory locks need no grant."""
    tables = ", ".join(f"{schema}.{p}_{t}" for t in TABLES)
    return (
        f"GRANT USAGE ON SCHEMA {schema} TO {role};\n"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {role};\n"
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role};\n"
    )


def schema_sql(p: str) -> str:
    """The DDL of prefix ``p`` (a name from :func:`prefix_name`): tables, then functions."""
    text = _SCHEMA + MORE_FUNCTIONS + FINISH_SQL + DS_SQL
    return text.replace("{p}", p).replace("{version}", str(SCHEMA_VERSION))


_SCHEMA = r"""
CREATE TABLE {p}_schema (version int NOT NULL);
INSERT INTO {p}_schema VALUES ({version});

-- One row per session: the record of its current generation.
CREATE TABLE {p}_session (
  session_id  text PRIMARY KEY,
  generation  bigint  NOT NULL,
  state       text    NOT NULL,            -- active | done | cancelled | failed
  reason      text,
  owner       text    NOT NULL,            -- the claim's token: a retried claim is recognised
  n           bigint  NOT NULL DEFAULT 0,  -- offset of the last chunk of this generation
  cancel      boolean NOT NULL DEFAULT false,
  metadata    bytea,                       -- the JSON blob, byte-exact
  q           bigint  NOT NULL DEFAULT 0,  -- steering messages of this generation: count
  qb          bigint  NOT NULL DEFAULT 0,  -- ... and bytes
  compacted   bigint,                      -- the generation whose log was folded
  short       text,                        -- fan-in: the first part that ended short
  turn        text,                        -- what this generation answers (claim's turn)
  lease_until timestamptz,                 -- NULL once finished
  created_ms  bigint  NOT NULL,
  updated_ms  bigint  NOT NULL,
  expires_at  timestamptz NOT NULL         -- retention: rows past it are absent to every read
) WITH (fillfactor = 70);
CREATE INDEX {p}_session_expires ON {p}_session (expires_at);

-- One row per appended batch ('c': frames), folded slice ('c') or end marker ('e'), keyed like
-- the Redis entry id <generation>-<offset of the last chunk>; the end marker sits at n + 1.
CREATE TABLE {p}_log (
  session_id  text   NOT NULL,
  generation  bigint NOT NULL,
  last_offset bigint NOT NULL,
  kind        "char" NOT NULL,
  body        bytea  NOT NULL,
  PRIMARY KEY (session_id, generation, last_offset)
);

-- Fan-in: the admitted producers of the current generation (name '' = the owner).
CREATE TABLE {p}_part (
  session_id   text   NOT NULL,
  name         text   NOT NULL,
  token        text   NOT NULL DEFAULT '',
  seq          bigint NOT NULL DEFAULT 0,
  first_offset bigint NOT NULL DEFAULT 0,
  state        "char" NOT NULL DEFAULT 'o',  -- o open, e ended, x ended short
  PRIMARY KEY (session_id, name)
);

-- Steering messages of the current generation, and the idempotency keys (kept across claims).
CREATE TABLE {p}_message (
  session_id text   NOT NULL,
  generation bigint NOT NULL,
  seq        bigint NOT NULL,
  body       bytea  NOT NULL,
  PRIMARY KEY (session_id, generation, seq)
);
CREATE TABLE {p}_message_key (
  session_id text   NOT NULL,
  key        text   NOT NULL,
  generation bigint NOT NULL,
  seq        bigint NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (session_id, key)
);

CREATE FUNCTION {p}_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- One record of a live message: tag, then the session id and the body, length-prefixed
-- (the same form as the Redis bus, see _codec.records).
CREATE FUNCTION {p}_rec(tag text, sid text, body text) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT tag || octet_length(sid) || ':' || sid || octet_length(body) || ':' || body $$;

-- Send a record; one over NOTIFY's limit becomes a wake record ('W', body: the tag it
-- replaces): listeners read what it was from the store.
CREATE FUNCTION {p}_notify(ch text, tag text, sid text, body text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE r text := {p}_rec(tag, sid, body);
BEGIN
  IF octet_length(r) > 7999 THEN r := {p}_rec('W', sid, tag); END IF;
  PERFORM pg_notify(ch, r);
END $$;

-- The locked, unexpired session row (an expired one is deleted: absent to everyone).
CREATE FUNCTION {p}_lock(sid text) RETURNS {p}_session LANGUAGE plpgsql AS $$
DECLARE r {p}_session;
BEGIN
  SELECT * INTO r FROM {p}_session WHERE session_id = sid FOR UPDATE;
  IF FOUND AND r.expires_at <= clock_timestamp() THEN
    DELETE FROM {p}_log WHERE session_id = sid;
    DELETE FROM {p}_part WHERE session_id = sid;
    DELETE FROM {p}_message WHERE session_id = sid;
    DELETE FROM {p}_kept WHERE session_id = sid;
    DELETE FROM {p}_session WHERE session_id = sid;
    RETURN NULL;
  END IF;
  IF NOT FOUND THEN RETURN NULL; END IF;
  RETURN r;
END $$;

-- Why a producer of generation gen may not write: '' when it may.
CREATE FUNCTION {p}_refusal(r {p}_session, gen bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN r.session_id IS NULL THEN 'gone'
              WHEN r.generation <> gen THEN 'stale'
              WHEN r.state <> 'active' THEN 'closed' || chr(10) || r.state || chr(10)
                                             || coalesce(r.reason, '')
              ELSE '' END
$$;

-- Finish the (locked) generation: state, end marker at n + 1, no lease, live end message.
CREATE FUNCTION {p}_finish(r {p}_session, st text, why text, ret_ms bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE body text := st || chr(10) || coalesce(why, '');
BEGIN
  UPDATE {p}_session SET state = st, reason = why, cancel = false, lease_until = NULL,
    updated_ms = {p}_now_ms(),
    expires_at = clock_timestamp() + ret_ms * interval '1 millisecond'
  WHERE session_id = r.session_id;
  INSERT INTO {p}_log VALUES (r.session_id, r.generation, r.n + 1, 'e', convert_to(body, 'UTF8'))
  ON CONFLICT DO NOTHING;
  PERFORM {p}_notify('{p}_data', 'E', r.session_id, r.generation || ':' || (r.n + 1) || ':' || body);
END $$;

-- Fail the locked generation if its lease lapsed; true when it did.
CREATE FUNCTION {p}_lapse(r {p}_session, ret_ms bigint, why text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF r.state = 'active' AND r.lease_until <= clock_timestamp() THEN
    PERFORM {p}_finish(r, 'failed', 'lease_expired', ret_ms);
    PERFORM {p}_notify('{p}_ctl', 'L', r.session_id, r.generation || ':' || why);
    RETURN true;
  END IF;
  RETURN false;
END $$;

-- The record as info returns it.
CREATE FUNCTION {p}_describe(r {p}_session) RETURNS TABLE (
  generation bigint, state text, reason text, n bigint, metadata bytea, created_ms bigint,
  updated_ms bigint, cancel boolean, lease_ms bigint, now_ms bigint)
LANGUAGE sql VOLATILE AS $$
  SELECT r.generation, r.state, r.reason, r.n, r.metadata, r.created_ms, r.updated_ms, r.cancel,
    CASE WHEN r.state = 'active' THEN greatest(0, (extract(epoch FROM
      r.lease_until - clock_timestamp()) * 1000)::bigint) ELSE -2 END,
    {p}_now_ms()
  WHERE r.session_id IS NOT NULL
$$;

-- Claim a session for a new generation. With a turn (trn): a generation of the same turn is
-- left alone unless it failed; a live one of another turn (or of none) is finished 'cancelled'
-- with reason 'superseded' (end marker, E on data, its producer told L stale on ctl) and the
-- session is claimed as for a restart, all in this transaction. state 'ds': a Durable Streams
-- stream holds the id (never claimed).
CREATE FUNCTION {p}_claim(sid text, tok text, restart boolean, md bytea, lease_ms bigint,
  ret_ms bigint, trn text) RETURNS TABLE (created boolean, generation bigint, state text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  r {p}_session;
  now_ms bigint := {p}_now_ms();
  gen bigint := now_ms;
  born bigint := now_ms;
  st text;
BEGIN
  -- An id that may not exist yet: two first claims serialise on this lock (so do a claim
  -- and a Durable Streams create of the same id: both take it).
  PERFORM pg_advisory_xact_lock(hashtextextended('{p}:' || sid, 0));
  IF {p}_is_stream(sid) THEN RETURN QUERY SELECT false, 0::bigint, 'ds'::text; RETURN; END IF;
  r := {p}_lock(sid);
  IF r.session_id IS NOT NULL THEN
    st := r.state;
    IF st = 'active' THEN
      IF r.owner = tok THEN RETURN QUERY SELECT true, r.generation, st; RETURN; END IF;
      IF r.lease_until > clock_timestamp() THEN
        IF trn IS NULL OR r.turn = trn THEN
          RETURN QUERY SELECT false, r.generation, st; RETURN;
        END IF;
        PERFORM {p}_finish(r, 'cancelled', 'superseded', ret_ms);
        PERFORM {p}_notify('{p}_ctl', 'L', sid, r.generation || ':stale');
        st := 'cancelled';
      ELSE
        PERFORM {p}_lapse(r, ret_ms, 'stale');
        st := 'failed';
      END IF;
    END IF;
    IF trn IS NOT NULL THEN
      IF st <> 'failed' AND r.turn = trn THEN RETURN QUERY SELECT false, r.generation, st; RETURN; END IF;
    ELSIF st <> 'failed' AND NOT restart THEN
      RETURN QUERY SELECT false, r.generation, st; RETURN;
    END IF;
    gen := greatest(r.generation + 1, now_ms);
    born := r.created_ms;
    -- A replaced generation whose hook is expected stays (postgres_sql_finish), log included.
    PERFORM {p}_keep(sid, ret_ms);
    DELETE FROM {p}_log WHERE session_id = sid
      AND generation NOT IN (SELECT k.generation FROM {p}_kept k WHERE k.session_id = sid);
    DELETE FROM {p}_part WHERE session_id = sid;
    DELETE FROM {p}_message WHERE session_id = sid;
    -- The row is rewritten in place, never deleted and inserted again: a transition waiting
    -- on its lock then reads the new generation (and refuses a stale write) instead of
    -- finding the row gone.
    UPDATE {p}_session SET generation = gen, state = 'active', reason = NULL, owner = tok,
      n = 0, cancel = false, metadata = md, q = 0, qb = 0, compacted = NULL, short = NULL,
      turn = trn, lease_until = clock_timestamp() + lease_ms * interval '1 millisecond',
      created_ms = born, updated_ms = now_ms,
      expires_at = clock_timestamp() + ret_ms * interval '1 millisecond'
    WHERE session_id = sid;
  ELSE
    INSERT INTO {p}_session (session_id, generation, state, owner, metadata, turn, lease_until,
      created_ms, updated_ms, expires_at)
    VALUES (sid, gen, 'active', tok, md, trn,
      clock_timestamp() + lease_ms * interval '1 millisecond',
      born, now_ms, clock_timestamp() + ret_ms * interval '1 millisecond');
  END IF;
  RETURN QUERY SELECT true, gen, 'active'::text;
END $$;

-- The writer's round trip: every batch fenced by its explicit offsets, settled in place (a
-- retry of a batch already applied is recognised by its stored body), then the live records.
-- Returns per batch '' (stored), 'hole <n>' (stored after a hole: see below) or a refusal
-- ({p}_refusal; 'lapsed' when the generation is active but the batch does not continue it).
-- The batches that continue their generation (all of them, nearly always) go in one UPDATE
-- and one INSERT; the rest, and every batch of a round trip that names a session twice, one
-- by one.
CREATE FUNCTION {p}_append(sids text[], gens bigint[], firsts bigint[], lasts bigint[],
  bodies bytea[], maxlen bigint, notes text[]) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
  k int := coalesce(array_length(sids, 1), 0);
  out text[] := array_fill(''::text, ARRAY[k]);
  done boolean[] := array_fill(false, ARRAY[k]);
  seqscan text := current_setting('enable_seqscan');
  fast int[];
  j int;
  r {p}_session;
  stored bytea;
  note text;
  code text;
BEGIN
  -- Lock every session of the round trip in one order, byte order ("C", the order the client
  -- sorts renewals and lease checks in): no two of them deadlock.
  PERFORM 1 FROM {p}_session WHERE session_id = ANY(sids) ORDER BY session_id COLLATE "C" FOR UPDATE;
  IF k > 1 AND k = (SELECT count(DISTINCT x) FROM unnest(sids) x) THEN
    -- Probes of the key, never a sequential scan per batch (the plan of a table analysed
    -- while small); only here: the lock statement above is faster as it plans itself.
    PERFORM set_config('enable_seqscan', 'off', true);
    WITH moved AS (
      UPDATE {p}_session s SET n = b.last, updated_ms = {p}_now_ms()
      FROM unnest(sids, gens, firsts, lasts) WITH ORDINALITY AS b(sid, gen, first, last, i)
      WHERE s.session_id = b.sid AND s.generation = b.gen AND s.state = 'active'
        AND s.n = b.first - 1 AND s.expires_at > clock_timestamp()
      RETURNING b.i::int AS i)
    SELECT array_agg(moved.i) INTO fast FROM moved;
    PERFORM set_config('enable_seqscan', seqscan, true);
    INSERT INTO {p}_log SELECT sids[f], gens[f], lasts[f], 'c', bodies[f] FROM unnest(fast) f;
    IF fast IS NOT NULL THEN
      FOREACH j IN ARRAY fast LOOP done[j] := true; END LOOP;
    END IF;
  END IF;
  FOR i IN 1 .. k LOOP
    CONTINUE WHEN done[i];
    code := '';
    UPDATE {p}_session SET n = lasts[i], updated_ms = {p}_now_ms()
    WHERE session_id = sids[i] AND generation = gens[i] AND state = 'active'
      AND n = firsts[i] - 1 AND expires_at > clock_timestamp();
    IF NOT FOUND THEN
      SELECT body INTO stored FROM {p}_log
      WHERE session_id = sids[i] AND generation = gens[i] AND last_offset = lasts[i]
        AND kind = 'c';
      IF FOUND AND stored = bodies[i] THEN
        CONTINUE;  -- a retry of a batch already stored: ''
      END IF;
      SELECT * INTO r FROM {p}_session WHERE session_id = sids[i]
        AND expires_at > clock_timestamp();
      code := {p}_refusal(r, gens[i]);
      IF code = '' AND r.n < firsts[i] - 1 THEN
        -- The store lost chunks n+1 .. first-1 this producer had stored (acknowledged
        -- commits a failover to an asynchronous standby did not carry over). The generation
        -- goes on; the hole stays in the log, where every replay reports it as a reset.
        UPDATE {p}_session SET n = lasts[i], updated_ms = {p}_now_ms()
        WHERE session_id = sids[i];
        code := 'hole' || chr(10) || r.n;
      ELSE
        out[i] := coalesce(nullif(code, ''), 'lapsed');
        CONTINUE;
      END IF;
    END IF;
    INSERT INTO {p}_log VALUES (sids[i], gens[i], lasts[i], 'c', bodies[i]);
    out[i] := code;
  END LOOP;
  IF maxlen > 0 THEN
    -- Trim to maxlen whole rows the logs that took a batch (a retry's trims nothing new).
    FOR i IN 1 .. k LOOP
      CONTINUE WHEN out[i] <> '' AND NOT starts_with(out[i], 'hole');
      IF lasts[i] > maxlen THEN
        DELETE FROM {p}_log WHERE session_id = sids[i] AND generation = gens[i]
          AND last_offset < lasts[i] - maxlen + 1;
      END IF;
    END LOOP;
  END IF;
  FOREACH note IN ARRAY notes LOOP PERFORM pg_notify('{p}_data', note); END LOOP;
  RETURN out;
END $$;

CREATE FUNCTION {p}_metadata(sid text, gen bigint, md bytea) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid); why text := {p}_refusal(r, gen);
BEGIN
  IF why <> '' THEN RETURN why; END IF;
  UPDATE {p}_session SET metadata = md, updated_ms = {p}_now_ms() WHERE session_id = sid;
  PERFORM {p}_notify('{p}_data', 'M', sid, gen || ':' || convert_from(md, 'UTF8'));
  RETURN '';
END $$;

-- Extend leases (never a lapsed one); per lease 'ok', 'cancel' (ok, a cancel is pending), or
-- a refusal ('closed failed lease_expired' for one that lapsed: failed here, kept for
-- ret_ms like every finished generation). With push, retention is pushed forward too.
-- The leases still running are extended in one UPDATE (a loop of 1,000 held every row it
-- had locked, and the writers of those sessions, for ~46 ms); the rest settle one by one.
CREATE FUNCTION {p}_renew(sids text[], gens bigint[], lease_ms bigint, ret_ms bigint,
  push boolean)
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
  k int := coalesce(array_length(sids, 1), 0);
  out text[] := array_fill(''::text, ARRAY[k]);
  seqscan text := current_setting('enable_seqscan');
  got record;
  r {p}_session;
  why text;
BEGIN
  -- The order of <p>_append's locks: no deadlock with a writer.
  PERFORM 1 FROM {p}_session WHERE session_id = ANY(sids) ORDER BY session_id COLLATE "C" FOR UPDATE;
  PERFORM set_config('enable_seqscan', 'off', true);
  FOR got IN
    UPDATE {p}_session s SET lease_until = clock_timestamp() + lease_ms * interval '1 millisecond',
      expires_at = CASE WHEN push
        THEN clock_timestamp() + ret_ms * interval '1 millisecond' ELSE s.expires_at END
    FROM unnest(sids, gens) WITH ORDINALITY AS b(sid, gen, i)
    WHERE s.session_id = b.sid AND s.generation = b.gen AND s.state = 'active'
      AND s.lease_until > clock_timestamp() AND s.expires_at > clock_timestamp()
    RETURNING b.i::int AS i, s.cancel AS cancel
  LOOP
    out[got.i] := CASE WHEN got.cancel THEN 'cancel' ELSE 'ok' END;
  END LOOP;
  PERFORM set_config('enable_seqscan', seqscan, true);
  FOR i IN 1 .. k LOOP
    CONTINUE WHEN out[i] <> '';
    r := {p}_lock(sids[i]);
    why := {p}_refusal(r, gens[i]);
    IF why = '' AND {p}_lapse(r, ret_ms, 'lease_expired') THEN
      why := 'closed' || chr(10) || 'failed' || chr(10) || 'lease_expired';
    END IF;
    IF why = '' THEN
      UPDATE {p}_session SET lease_until = clock_timestamp() + lease_ms * interval '1 millisecond',
        expires_at = CASE WHEN push
          THEN clock_timestamp() + ret_ms * interval '1 millisecond' ELSE expires_at END
      WHERE session_id = sids[i];
      why := CASE WHEN r.cancel THEN 'cancel' ELSE 'ok' END;
    END IF;
    out[i] := why;
  END LOOP;
  RETURN out;
END $$;

-- Finish a generation. Returns 'ok <state>' (also when it had finished already) or a refusal.
CREATE FUNCTION {p}_close(sid text, gen bigint, st text, why text, last bigint, ret_ms bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE r {p}_session := {p}_lock(sid); refused text; held bigint; unit text; owner_seq bigint;
BEGIN
  IF r.generation = gen AND r.state <> 'active' THEN RETURN 'ok' || chr(10) || r.state; END IF;
  refused := {p}_refusal(r, gen);
  IF refused <> '' THEN RETURN refused; END IF;
  IF last IS NOT NULL AND st <> 'failed' THEN
    SELECT seq INTO owner_seq FROM {p}_part WHERE session_id = sid AND name = '';
    IF FOUND THEN held := owner_seq; unit := ' batches'; ELSE held := r.n; unit := ' chunks'; END IF;
    IF held <> last THEN
      st := 'failed';
      why := 'backend: the store holds ' || held || ' of ' || last || unit;
    ELSIF r.short IS NOT NULL THEN
      st := 'failed';
      why := 'backend: producer ' || r.short || ' lost a write';
    END IF;
  END IF;
  PERFORM {p}_finish(r, st, why, ret_ms);
  RETURN 'ok' || chr(10) || st;
END $$;

-- Check leases; fail those that lapsed. Per lease: the remaining milliseconds, or NULL when
-- that generation is over. The leases still running are read without a lock (a check never
-- holds up the writers of the sessions it follows); the others are locked one by one.
CREATE FUNCTION {p}_expire(sids text[], gens bigint[], ret_ms bigint) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  k int := coalesce(array_length(sids, 1), 0);
  out bigint[] := array_fill(NULL::bigint, ARRAY[k]);
  live boolean[] := array_fill(false, ARRAY[k]);
  seqscan text := current_setting('enable_seqscan');
  got record;
  r {p}_session;
BEGIN
  PERFORM set_config('enable_seqscan', 'off', true);
  FOR got IN
    SELECT b.i::int AS i, greatest(0, (extract(epoch FROM s.lease_until - clock_timestamp())
      * 1000)::bigint) AS left_ms
    FROM unnest(sids, gens) WITH ORDINALITY AS b(sid, gen, i)
    JOIN {p}_session s ON s.session_id = b.sid
    WHERE s.generation = b.gen AND s.state = 'active'
      AND s.lease_until > clock_timestamp() AND s.expires_at > clock_timestamp()
  LOOP
    out[got.i] := got.left_ms;
    live[got.i] := true;
  END LOOP;
  PERFORM set_config('enable_seqscan', seqscan, true);
  FOR i IN 1 .. k LOOP
    CONTINUE WHEN live[i];
    r := {p}_lock(sids[i]);
    IF r.session_id IS NULL OR r.generation <> gens[i] OR r.state <> 'active'
       OR {p}_lapse(r, ret_ms, 'lease_expired') THEN
      out[i] := NULL;
    ELSE
      out[i] := greatest(0, (extract(epoch FROM r.lease_until - clock_timestamp())
        * 1000)::bigint);
    END IF;
  END LOOP;
  RETURN out;
END $$;
"""
