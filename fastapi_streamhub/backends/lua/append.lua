-- Append the batches of several sessions in one call, then publish them live in one message.
-- (Used when a round trip carries two or more batches; one batch goes as a plain XADD + PUBLISH
-- pipeline, which is fewer commands.) Each XADD is fenced by its explicit id exactly as the
-- pipelined one is; a refused one does not stop the others.
-- KEYS: the log of each batch
-- ARGV: pub, data_ch, message, then per batch: entry id, value, trim id ('' = no trimming)
-- Returns per batch: 1 appended, 0 log missing (deleted or expired), -1 refused (id too low).
local out = {}
for i = 1, #KEYS do
  local base = 3 + (i - 1) * 3
  local id, value, minid = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local r
  if minid == '' then
    r = redis.pcall('XADD', KEYS[i], 'NOMKSTREAM', id, 'c', value)
  else
    r = redis.pcall('XADD', KEYS[i], 'NOMKSTREAM', 'MINID', minid, id, 'c', value)
  end
  if type(r) == 'table' and r.err then
    out[i] = -1
  elseif not r then
    out[i] = 0
  else
    out[i] = 1
  end
end
redis.call(ARGV[1], ARGV[2], ARGV[3])
return out
