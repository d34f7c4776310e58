-- One batch into the store, atomically: deduplicate, merge, count, keep dead letters, announce.
-- KEYS: state, lastseen, count:device, count:topic, count:reason, totals, deadletters, recent
--   (redis.py's KEY_NAMES, each under the prefix).
-- ARGV: deadletter limit, dedupe window, #devices, #topics, #reasons, #raw, #rejected, the
--   changes channel, then
--   per device: id, id as JSON, #readings, the readings' fingerprints back to back (with a
--     window), and the readings as lines: timestamp as JSON, receive time as JSON, #fields,
--     the members (none of these contains a line feed; one argument per device keeps the
--     client's command encoding cheap);
--   per topic and per reason: name, count; then the dead letters to keep, oldest first.
-- Publishes {"updated": [states...], "removed": []} on the channel when a state changed, in
-- the same script as the write, and returns the new JSON state of every device whose state
-- changed.

local state_key, seen_key, device_key, recent_key = KEYS[1], KEYS[2], KEYS[3], KEYS[8]

-- The key of a member '"key":value', as JSON text; only an escaped key takes the slow path.
local function key_of(member)
  local key = string.match(member, '^"[^"\\]*"')
  if key then return key end
  local stop = 1
  repeat
    stop = string.find(member, '"', stop + 1, true)
    local escapes = 0
    while string.byte(member, stop - 1 - escapes) == 92 do escapes = escapes + 1 end
  until escapes % 2 == 0
  return string.sub(member, 1, stop)
end

-- Whether a 16-byte fingerprint is one of a window's (fingerprints back to back): a plain
-- find, where only a match at a fingerprint's start counts.
local function holds(window, fingerprint)
  local from = 1
  while true do
    local at = string.find(window, fingerprint, from, true)
    if at == nil then return false end
    if at % 16 == 1 then return true end
    from = at + 1
  end
end

local function split(text)
  local members, index = {}, {}
  for line in string.gmatch(string.sub(text, 2, -2), '[^\n]+') do
    if string.byte(line, -1) == 44 then line = string.sub(line, 1, -2) end
    members[#members + 1] = line
    index[key_of(line)] = #members
  end
  return members, index
end

local function put(members, index, key, member)
  local at = index[key]
  if at == nil then
    at = #members + 1
    index[key] = at
  end
  members[at] = member
end

local limit, window_size, devices = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local topics, reasons = tonumber(ARGV[4]), tonumber(ARGV[5])
local changed, readings = {}, 0
local i = 9
for _ = 1, devices do
  local id, id_json, count, fingerprints = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local line = string.gmatch(ARGV[i + 4], '[^\n]+')
  i = i + 5
  -- The device's recent fingerprints back to back, oldest first (one string: a table of
  -- them, built and joined again per device and batch, was most of the script's time).
  local window, window_bytes
  if window_size > 0 then
    window_bytes = 16 * window_size
    window = redis.call('HGET', recent_key, id) or ''
    if #window > window_bytes then window = string.sub(window, -window_bytes) end
  end
  local old = redis.call('HGET', state_key, id)
  local members, index, newest
  if old then
    members, index = split(old)
    newest = tonumber(string.sub(members[index['"timestamp"']], 13))
  end
  local counted, seen, seen_json, applied_ts, applied_received = 0, nil, nil, nil, nil
  for r = 1, count do
    local ts_json, received_json, fields = line(), line(), tonumber(line())
    local fingerprint = window and string.sub(fingerprints, 16 * r - 15, 16 * r)
    if window and holds(window, fingerprint) then
      for _ = 1, fields do line() end
    else
      if window then
        window = window .. fingerprint
        if #window > window_bytes then window = string.sub(window, 17) end
      end
      counted = counted + 1
      local received = tonumber(received_json)
      if seen == nil or received > seen then seen, seen_json = received, received_json end
      local ts = tonumber(ts_json)
      if newest == nil or ts >= newest then
        if members == nil then
          members, index = {'"deviceId":' .. id_json}, {['"deviceId"'] = 1}
        end
        for _ = 1, fields do
          local member = line()
          put(members, index, key_of(member), member)
        end
        -- Their places are taken now, as merge() would; their values are written once, below.
        if index['"timestamp"'] == nil then
          put(members, index, '"timestamp"', '')
          put(members, index, '"receivedAt"', '')
        end
        newest, applied_ts, applied_received = ts, ts_json, received_json
      else
        for _ = 1, fields do line() end
      end
    end
  end
  if counted > 0 then
    readings = readings + counted
    redis.call('HINCRBY', device_key, id, counted)
    -- The score is the exact text: a Lua number would be formatted with fewer digits.
    redis.call('ZADD', seen_key, 'GT', seen_json, id)
    if window then redis.call('HSET', recent_key, id, window) end
  end
  if applied_ts then
    members[index['"timestamp"']] = '"timestamp":' .. applied_ts
    members[index['"receivedAt"']] = '"receivedAt":' .. applied_received
    local text = '{' .. table.concat(members, ',\n') .. '}'
    if text ~= old then
      redis.call('HSET', state_key, id, text)
      changed[#changed + 1] = text
    end
  end
end
for _ = 1, topics do
  redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, reasons do
  redis.call('HINCRBY', KEYS[5], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local totals = {readings = readings, raw = tonumber(ARGV[6]), rejected = tonumber(ARGV[7])}
for name, n in pairs(totals) do
  if n > 0 then redis.call('HINCRBY', KEYS[6], name, n) end
end
if i <= #ARGV then
  for d = i, #ARGV do redis.call('LPUSH', KEYS[7], ARGV[d]) end
  redis.call('LTRIM', KEYS[7], 0, limit - 1)
end
if #changed > 0 then
  redis.call('PUBLISH', ARGV[8], '{"updated":[' .. table.concat(changed, ',') .. '],"removed":[]}')
end
return changed
