-- The source's half of a fork: check it, count one more fork of it, answer the prefix to copy.
-- (The fork's half is ds_create.lua on the fork's keys; ds_fork_release.lua undoes this one
-- when that create does not happen. Two scripts because on a cluster the two streams live in
-- two slots; the prefix never changes, so copying it outside one script is exact.)
-- KEYS: the source's ds record, data, producers
-- ARGV: offset ('' = the tail), sub-offset (bytes, or messages of a JSON stream), the fork's
--       ct ('' = the source's), ttl, exp, expms ('' and '' = the source's three), the fork's id
-- Returns {'ok', prefix, ct, ttl, exp, expms, counted ('1': this call counted the fork; '0':
-- the source counts that id already, so a create that does not happen releases nothing)} or
-- {refusal}: source_not_found, source_gone, conflict (another content type), bad_fork_offset.
local r = ds_record()
if not r then return {'source_not_found'} end
if r[7] == '1' then return {'source_gone'} end
if ARGV[3] ~= '' and ARGV[3] ~= r[1] then return {'conflict'} end
local tail = redis.call('STRLEN', KEYS[2])
local at = tail
if ARGV[1] ~= '' then at = tonumber(ARGV[1]) end
if at > tail then return {'bad_fork_offset'} end
local json = ds_is_json(r[1])
if json and at > 0 and redis.call('GETRANGE', KEYS[2], at - 1, at - 1) ~= '\n' then
  return {'bad_fork_offset'}
end
local sub = tonumber(ARGV[2])
local cut = 0
if sub > 0 then
  if at >= tail then return {'bad_fork_offset'} end
  local after = redis.call('GETRANGE', KEYS[2], at, tail - 1)
  if not json then
    if sub > #after then return {'bad_fork_offset'} end
    cut = sub
  else
    for _ = 1, sub do
      local nl = string.find(after, '\n', cut + 1, true)
      if not nl then return {'bad_fork_offset'} end
      cut = nl
    end
  end
end
local prefix = ''
if at + cut > 0 then prefix = redis.call('GETRANGE', KEYS[2], 0, at + cut - 1) end
local counted = redis.call('HSETNX', KEYS[1], 'f:' .. ARGV[7], '1')
if counted == 1 then redis.call('HINCRBY', KEYS[1], 'rc', 1) end
if ARGV[4] == '' and ARGV[6] == '' then
  return {'ok', prefix, r[1], r[2], r[3], r[4], int(counted)}
end
return {'ok', prefix, r[1], ARGV[4], ARGV[5], ARGV[6], int(counted)}
