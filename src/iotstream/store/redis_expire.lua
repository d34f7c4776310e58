-- Removes the devices not seen since a time and announces their removal.
-- KEYS: lastseen, state. ARGV: the time before which a device counts as silent, the changes
--   channel, the prefix of the windows' keys (a device's is the prefix and its id).

local ids = redis.call('ZRANGE', KEYS[1], '-inf', '(' .. ARGV[1], 'BYSCORE')
-- unpack() is bounded by Lua's C stack, so remove in chunks.
for first = 1, #ids, 1000 do
  local chunk = {unpack(ids, first, math.min(first + 999, #ids))}
  redis.call('ZREM', KEYS[1], unpack(chunk))
  redis.call('HDEL', KEYS[2], unpack(chunk))
  for w = 1, #chunk do chunk[w] = ARGV[3] .. chunk[w] end
  redis.call('DEL', unpack(chunk))
end
if #ids > 0 then
  redis.call('PUBLISH', ARGV[2], '{"updated":[],"removed":' .. cjson.encode(ids) .. '}')
end
return ids
