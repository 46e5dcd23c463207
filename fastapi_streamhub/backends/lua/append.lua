-- Append the batches of several sessions in one call, then publish them live in one message.
-- (Used when a round trip carries two or more batches; one batch goes as a plain XADD + PUBLISH
-- pipeline, which is fewer commands.) Each XADD is fenced by its explicit id exactly as the
-- pipelined one is; a refused one does not stop the others.
-- The batches arrive as one argument, so the client packs a few arguments per round trip, not
-- several per batch: per batch, five length-prefixed fields ('<len>:<bytes>'): the log key,
-- the entry id, the trim id ('' = no trimming), the live record's head, the entry's value.
-- The live record of a batch is its head followed by its value.
-- KEYS: the logs written (on a cluster, all of them, in one slot; elsewhere the first, which is
-- enough to route the call)   ARGV: pub, data_ch, batches
-- Returns per batch: 1 appended, 0 log missing (deleted or expired), -1 refused (id too low).
local blob = ARGV[3]
local pos = 1
local function field()
  local colon = string.find(blob, ':', pos, true)
  local size = tonumber(string.sub(blob, pos, colon - 1))
  local value = string.sub(blob, colon + 1, colon + size)
  pos = colon + size + 1
  return value
end
local out = {}
local live = {}
local i = 0
while pos <= #blob do
  i = i + 1
  local key, id, minid, head, value = field(), field(), field(), field(), field()
  local r
  if minid == '' then
    r = redis.pcall('XADD', key, 'NOMKSTREAM', id, 'c', value)
  else
    r = redis.pcall('XADD', key, 'NOMKSTREAM', 'MINID', minid, id, 'c', value)
  end
  if type(r) == 'table' and r.err then
    out[i] = -1
  elseif not r then
    out[i] = 0
  else
    out[i] = 1
  end
  live[i] = head .. value
end
redis.call(ARGV[1], ARGV[2], table.concat(live))
return out
