-- Prepended first to every script that moves a job (and enqueue): what the hot scripts use to
-- spend less of Redis's one thread per job (measured in docs/scaling.md, #34 third cuts).

-- The settle context (JSON, see Queue::settle_context) with the fields the script was also
-- given as plain arguments (`plain`, e.g. the history's prefix and TTL and the dependents'
-- prefix). The JSON is decoded only when a field not in `plain` is read: most jobs end with no
-- dependents and are no array's child, and `cjson.decode` of the context is ~1.7 µs a call.
local function settle_context(json, plain)
  return setmetatable(plain, {__index = function(t, k)
    setmetatable(t, nil)
    for name, v in pairs(cjson.decode(json)) do
      if rawget(t, name) == nil then t[name] = v end
    end
    return rawget(t, k)
  end})
end

-- `s` as a JSON string. The hot events (queued, running, ended) are built by concatenation:
-- `cjson.encode` of their table is ~1.4 µs, the concatenation ~0.2. Ids and worker names
-- rarely hold a character JSON escapes; one that does goes through cjson.
local function json_string(s)
  if string.find(s, '[%c"\\]') then return cjson.encode(s) end
  return '"' .. s .. '"'
end
