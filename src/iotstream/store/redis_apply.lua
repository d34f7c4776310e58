-- One batch into the store, atomically: deduplicate, merge, count, keep dead letters, announce.
-- KEYS: state, lastseen, count:device, count:topic, count:reason, totals, deadletters
--   (redis.py's KEY_NAMES, each under the prefix).
-- ARGV: deadletter limit, dedupe window, #devices, #topics, #reasons, #raw, #rejected, the
--   changes channel, #written, the prefix of the windows' keys (a device's is the prefix and
--   its id), then
--   per written device ('w': the client merged it against the state and count it read
--     before, and sends the outcome), eight arguments: id, the count it merged against, the
--     new state ('' when unchanged), how many readings it counted, the newest receive time
--     among them as JSON, and its window's new fingerprints: an offset and the bytes written
--     there, then the bytes written at 0 ('' for none). It applies when the device still has
--     a state and that count: every reading that moves a state is counted, and an expiry
--     removes the state; otherwise the device is deferred;
--   per other device, in one of two forms, three arguments: a form letter, the readings'
--     fingerprints back to back (with a window), and lines (none contains a line feed; a
--     few arguments per device keep the client's command encoding cheap): id, id as JSON,
--     #readings, then
--     'r' (readings): per reading its timestamp as JSON, receive time as JSON, #fields and
--       the members;
--     'm' (merged, when the batch holds no reading of the device twice): the oldest timestamp
--       and the newest receive time as JSON, the timestamp and receive time of the reading
--       that is applied last (each one not older than any before it is applied), how many
--       members the first reading has, and the members of the readings applied in order,
--       merged (the first reading's keys first, each key with its last value).
--       It applies when every reading is newer than the stored state (so none can be a
--       repeat: whatever the window holds is not newer than the state); otherwise the device
--       is deferred and sent again as 'r';
--   per topic and per reason: name, count; then the dead letters to keep, oldest first.
-- Publishes {"updated": [states...], "removed": []} on the channel when a state changed, in
-- the same script as the write, and returns {the new JSON state of every 'r' or 'm' device
-- whose state changed, the ids of the deferred devices, and per 'r' or 'm' device that has a
-- state: id, state, count and window, four items in a row, for the client to merge against}.
--
-- A window is a ring of the device's last #window fingerprints, 16 bytes each: the reading
-- counted when the device's count was n has slot n mod #window (a slot never written, after
-- an expiry, holds zeros).

local state_key, seen_key, device_key, recent_prefix = KEYS[1], KEYS[2], KEYS[3], ARGV[10]

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
local window_bytes = 16 * window_size
local changed, deferred, known, readings = {}, {}, {}, 0
-- unpack() is bounded by Lua's C stack: calls with many arguments go in chunks.
local CHUNK = 4000

local function call_chunked(command, key, flag, items)
  for first = 1, #items, CHUNK do
    local last = math.min(first + CHUNK - 1, #items)
    if flag then
      redis.call(command, key, flag, unpack(items, first, last))
    else
      redis.call(command, key, unpack(items, first, last))
    end
  end
end

-- The device's window (one string: a table of fingerprints, built and joined again per device
-- and batch, was most of the script's time)
-- (with a window) and the device's count, where the next fingerprint goes.
local function recent_of(id)
  if window_size == 0 then return nil, 0 end
  local window = redis.call('GET', recent_prefix .. id) or ''
  if #window > window_bytes then window = string.sub(window, 1, window_bytes) end
  return window, tonumber(redis.call('HGET', device_key, id) or '0')
end

local function ring_put(window, slot, fingerprint)
  local at = 16 * slot
  if #window < at then window = window .. string.rep('\0', at - #window) end
  return string.sub(window, 1, at) .. fingerprint .. string.sub(window, at + 17)
end

local function parse(old)
  if not old then return nil, nil, nil end
  local members, index = split(old)
  return members, index, tonumber(string.sub(members[index['"timestamp"']], 13))
end

local function started(members, index, id_json)
  if members == nil then return {'"deviceId":' .. id_json}, {['"deviceId"'] = 1} end
  return members, index
end

-- Their places are taken once a reading applied, as merge() would; their values are written
-- once, by finish().
local function stamp_places(members, index)
  if index['"timestamp"'] == nil then
    put(members, index, '"timestamp"', '')
    put(members, index, '"receivedAt"', '')
  end
end

-- The device's count after counting ``counted`` more readings.
local function count(id, counted, seen_json, window)
  if counted == 0 then return redis.call('HGET', device_key, id) end
  readings = readings + counted
  -- The score is the exact text: a Lua number would be formatted with fewer digits.
  redis.call('ZADD', seen_key, 'GT', seen_json, id)
  if window then redis.call('SET', recent_prefix .. id, window) end
  return redis.call('HINCRBY', device_key, id, counted)
end

-- The device's state after the merge.
local function finish(id, old, members, index, ts_json, received_json)
  members[index['"timestamp"']] = '"timestamp":' .. ts_json
  members[index['"receivedAt"']] = '"receivedAt":' .. received_json
  local text = '{' .. table.concat(members, ',\n') .. '}'
  if text ~= old then
    redis.call('HSET', state_key, id, text)
    changed[#changed + 1] = text
  end
  return text
end

local function remember(id, text, counted, window)
  if not text then return end
  known[#known + 1] = id
  known[#known + 1] = text
  known[#known + 1] = counted
  known[#known + 1] = window or ''
end

local function readings_form(id, id_json, n, fingerprints, line)
  local window, base = recent_of(id)
  local old = redis.call('HGET', state_key, id)
  local members, index, newest = parse(old)
  local counted, seen, seen_json, applied_ts, applied_received = 0, nil, nil, nil, nil
  for r = 1, n do
    local ts_json, received_json, fields = line(), line(), tonumber(line())
    local fingerprint = window and string.sub(fingerprints, 16 * r - 15, 16 * r)
    if window and holds(window, fingerprint) then
      for _ = 1, fields do line() end
    else
      if window then window = ring_put(window, (base + counted) % window_size, fingerprint) end
      counted = counted + 1
      local received = tonumber(received_json)
      if seen == nil or received > seen then seen, seen_json = received, received_json end
      local ts = tonumber(ts_json)
      if newest == nil or ts >= newest then
        members, index = started(members, index, id_json)
        for _ = 1, fields do
          local member = line()
          put(members, index, key_of(member), member)
        end
        stamp_places(members, index)
        newest, applied_ts, applied_received = ts, ts_json, received_json
      else
        for _ = 1, fields do line() end
      end
    end
  end
  local total = count(id, counted, seen_json, window)
  local text = old
  if applied_ts then text = finish(id, old, members, index, applied_ts, applied_received) end
  remember(id, text, total, window)
end

local function merged_form(id, id_json, n, fingerprints, line)
  local oldest, seen_json, ts_json, received_json, first = line(), line(), line(), line(), line()
  local old = redis.call('HGET', state_key, id)
  local window, base = recent_of(id)
  local members, index, newest = parse(old)
  if (newest ~= nil and tonumber(oldest) <= newest) or (not old and window and #window > 0) then
    deferred[#deferred + 1] = id
    return
  end
  if window then
    for k = 0, n - 1 do
      local fingerprint = string.sub(fingerprints, 16 * k + 1, 16 * k + 16)
      window = ring_put(window, (base + k) % window_size, fingerprint)
    end
  end
  local total = count(id, n, seen_json, window)
  members, index = started(members, index, id_json)
  first = tonumber(first)
  if first == 0 then stamp_places(members, index) end
  local m = 0
  for member in line do
    put(members, index, key_of(member), member)
    m = m + 1
    if m == first then stamp_places(members, index) end
  end
  remember(id, finish(id, old, members, index, ts_json, received_json), total, window)
end

-- The written devices, each taken when its state and count are what the client merged
-- against (see above).
local written = tonumber(ARGV[9])
local i = 11
if written > 0 then
  local ids = {}
  for d = 1, written do ids[d] = ARGV[i + 8 * (d - 1)] end
  local olds, counts = {}, {}
  for first = 1, written, CHUNK do
    local last = math.min(first + CHUNK - 1, written)
    local some_olds = redis.call('HMGET', state_key, unpack(ids, first, last))
    local some_counts = redis.call('HMGET', device_key, unpack(ids, first, last))
    for d = first, last do
      olds[d], counts[d] = some_olds[d - first + 1], some_counts[d - first + 1]
    end
  end
  local states, totals, seen = {}, {}, {}
  for d = 1, written do
    local id = ids[d]
    if olds[d] and counts[d] == ARGV[i + 1] then
      local text, n = ARGV[i + 2], tonumber(ARGV[i + 3])
      if text ~= '' then
        states[#states + 1] = id
        states[#states + 1] = text
        changed[#changed + 1] = text
      end
      local key = recent_prefix .. id
      if ARGV[i + 6] ~= '' then redis.call('SETRANGE', key, ARGV[i + 5], ARGV[i + 6]) end
      if ARGV[i + 7] ~= '' then redis.call('SETRANGE', key, 0, ARGV[i + 7]) end
      totals[#totals + 1] = id
      totals[#totals + 1] = tonumber(ARGV[i + 1]) + n
      seen[#seen + 1] = ARGV[i + 4]
      seen[#seen + 1] = id
      readings = readings + n
    else
      deferred[#deferred + 1] = id
    end
    i = i + 8
  end
  call_chunked('HSET', state_key, nil, states)
  call_chunked('HSET', device_key, nil, totals)
  call_chunked('ZADD', seen_key, 'GT', seen)
end
local written_changes = #changed
for _ = 1, devices do
  local form, fingerprints, line = ARGV[i], ARGV[i + 1], string.gmatch(ARGV[i + 2], '[^\n]+')
  i = i + 3
  local id, id_json, n = line(), line(), tonumber(line())
  if form == 'm' then
    merged_form(id, id_json, n, fingerprints, line)
  else
    readings_form(id, id_json, n, fingerprints, line)
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
-- The client knows the states it wrote; it is told the others.
local merged_here = {}
for c = written_changes + 1, #changed do merged_here[#merged_here + 1] = changed[c] end
return {merged_here, deferred, known}
