-- Writes one command if it is still as the writer read it, and announces it.
-- KEYS: the command, the device's commands (zset by creation), open commands (zset by
--   expiry), the device's queued commands (zset by creation), the idempotency key (or any
--   key when there is none), the devices with queued commands (set).
-- ARGV: 1 the command as read ('' for a new one), 2 the command to write, 3 its id,
--   4 its creation time, 5 its expiry time ('' once closed), 6 '1' while queued,
--   7 '1' with an idempotency key, 8 milliseconds to keep it ('0': for ever),
--   9 the changes channel, 10 the announcement, 11 the device id.
-- Returns 1 when written, 0 when another writer changed it first (or it exists), or the id
-- of the command an idempotency key already made.

local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then
    return 0
  end
  if ARGV[7] == '1' then
    local made = redis.call('GET', KEYS[5])
    if made then
      return made
    end
    redis.call('SET', KEYS[5], ARGV[3])
  end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[3], ARGV[3])
else
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
end
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
  redis.call('SADD', KEYS[6], ARGV[11])
else
  redis.call('ZREM', KEYS[4], ARGV[3])
  if redis.call('ZCARD', KEYS[4]) == 0 then
    redis.call('SREM', KEYS[6], ARGV[11])
  end
end
if ARGV[8] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  if ARGV[7] == '1' then
    redis.call('PEXPIRE', KEYS[5], ARGV[8])
  end
end
redis.call('PUBLISH', ARGV[9], ARGV[10])
return 1
