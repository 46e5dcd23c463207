-- on_finish: the index of generations whose hook has not run, a sorted set of members
-- '<gen>:<session id>' scored by when each was last handed out (ms, the server's clock).
-- KEYS: index   ARGV: op ('add' | 'take'), then for add: member; for take: count, idle_ms
-- add: inserts the member (scored now) unless present. take: up to `count` members scored at
-- or before now - idle_ms, oldest first, each rescored now; returns them.
local now = now_ms()
if ARGV[1] == 'add' then
  redis.call('ZADD', KEYS[1], 'NX', now, ARGV[2])
  return {}
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0,
  tonumber(ARGV[2]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', now, member) end
return due
