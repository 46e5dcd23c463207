-- Append the batches of several sessions in one call, then publish them live in one message.
-- (Used when a round trip carries two or more batches; one batch goes as a plain XADD + PUBLISH
-- pipeline, which is fewer commands.) Each XADD is fenced by its explicit id exactly as the
-- pipelined one is; a refused one does not stop the others.
-- The batches arrive as one argument, so the client packs a few arguments per round trip, not
-- several per batch: per batch, five length-prefixed fields ('<len>:<bytes>'): the log key,
-- the entry id, the trim id ('' = no trimming), the live record's head, the entry's value.
-- The live record of a batch is its head followed by its value ('C'), or its head alone: a
-- notice ('S') the client sent instead for a batch over max_publish_bytes. Records go out in
-- as few messages as fit max_publish_bytes each.
-- KEYS: the logs written (on a cluster, all of them, in one slot; elsewhere the first, which is
-- enough to route the call)   ARGV: pub, data_ch, batches, max_publish_bytes
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
local size = 0
local limit = tonumber(ARGV[4])
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
  local rec = head
  if string.sub(head, 1, 1) == 'C' then rec = head .. value end
  if size > 0 and size + #rec > limit then
    redis.call(ARGV[1], ARGV[2], table.concat(live))
    live = {}
    size = 0
  end
  live[#live + 1] = rec
  size = size + #rec
end
if size > 0 then redis.call(ARGV[1], ARGV[2], table.concat(live)) end
return out
