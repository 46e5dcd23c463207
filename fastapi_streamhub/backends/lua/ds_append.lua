-- One Durable Streams append: producer check, closed, content type, Stream-Seq, then the data,
-- the close and the expiry window, atomically; publishes 'S<sid>:0:<tail>' for live readers.
-- KEYS: ds record, data, producers
-- ARGV: data, media type ('' = not checked; compared with the stream's, parameters aside), stream seq ('' = none), producer id ('' = none), epoch,
--       producer seq, close ('1'/'0'), retention_ms, sid, pub, data_ch
-- Returns ds_reply(outcome, r, epoch, seq) (outcomes: backends/_ds.py DsOutcome).
local r = ds_record()
if not r then return {'not_found'} end
if r[7] == '1' then return ds_reply('gone', r) end
local pid = ARGV[4]
local epoch, pseq = 0, 0
if pid ~= '' then
  local e, s = tonumber(ARGV[5]), tonumber(ARGV[6])
  local stored = redis.call('HGET', KEYS[3], pid)
  if not stored then
    if s ~= 0 then return ds_reply('seq_gap', r, e, 0) end
    epoch, pseq = e, 0
  else
    local colon = string.find(stored, ':', 1, true)
    local se = tonumber(string.sub(stored, 1, colon - 1))
    local sl = tonumber(string.sub(stored, colon + 1))
    if e < se then return ds_reply('stale_epoch', r, se, sl) end
    if e > se then
      if s ~= 0 then return ds_reply('bad_epoch_seq', r, se, sl) end
      epoch, pseq = e, 0
    elseif s <= sl then
      return ds_reply('duplicate', r, se, sl)
    elseif s ~= sl + 1 then
      return ds_reply('seq_gap', r, se, sl + 1)
    else
      epoch, pseq = se, s
    end
  end
end
if r[6] == '1' then
  -- Closing again is idempotent, unless it carries data or is some producer's batch.
  if #ARGV[1] > 0 or ARGV[7] ~= '1' or pid ~= '' then return ds_reply('closed', r, epoch, pseq) end
  return ds_reply('appended', r, epoch, pseq)
end
if ARGV[2] ~= '' and ARGV[2] ~= ds_media(r[1]) then
  return ds_reply('type_mismatch', r, epoch, pseq)
end
if ARGV[3] ~= '' then
  local last = redis.call('HGET', KEYS[1], 'seq')
  if last and not bytes_greater(ARGV[3], last) then return ds_reply('stream_seq', r, epoch, pseq) end
  redis.call('HSET', KEYS[1], 'seq', ARGV[3])
end
if pid ~= '' then redis.call('HSET', KEYS[3], pid, int(epoch) .. ':' .. int(pseq)) end
if #ARGV[1] > 0 then redis.call('APPEND', KEYS[2], ARGV[1]) end
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'closed', '1')
  r[6] = '1'
end
ds_touch(r, ARGV[8])
redis.call(ARGV[10], ARGV[11], record('S', ARGV[9], '0:' .. redis.call('STRLEN', KEYS[2])))
return ds_reply('appended', r, epoch, pseq)
