-- Read a Durable Streams stream: its record and up to `limit` bytes from `offset`.
-- KEYS: ds record, data, producers   ARGV: offset, limit, touch ('1': restart the expiry
-- window), retention_ms
-- Returns ds_reply('ok', r) with the bytes appended, or {'not_found'}.
local r = ds_record()
if not r then return {'not_found'} end
if r[7] == '1' then
  local reply = ds_reply('ok', r)
  reply[#reply + 1] = ''
  return reply
end
if ARGV[3] == '1' then ds_touch(r, ARGV[4]) end
local reply = ds_reply('ok', r)
local limit = tonumber(ARGV[2])
local data = ''
if limit > 0 then
  local first = tonumber(ARGV[1])
  data = redis.call('GETRANGE', KEYS[2], first, first + limit - 1)
end
reply[#reply + 1] = data
return reply
