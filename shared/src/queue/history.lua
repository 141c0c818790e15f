-- History: per-minute counters an operator graphs (GET /api/v1/stats, the dashboard, dcc top).
-- One HASH per minute, `ctx.history .. <minute>` (minute = ms // 60000, same hash tag as every
-- key), expiring `ctx.history_ttl` seconds after its last new field (each new field sets the TTL
-- again: a minute lives that long after it ends); ttl 0: history off.
-- Fields, read back by shared/src/history.rs (keep both in step):
--   <queue>|<tenant>|sub                    jobs submitted (an array is one)
--   <queue>|<tenant>|start|<bin>            first attempts started, by queue wait (bin below)
--   <queue>|<tenant>|restart                later attempts started
--   <queue>|<tenant>|<state>|<bin or ->     jobs ended (succeeded, failed, timed_out, cancelled),
--                                           by run time of the last attempt ('-': never ran)
--   <queue>|<tenant>|code|<code>|<image>    failed and timed-out jobs, by error code and image
-- One HINCRBY per transition (its EXPIRE only with a minute's new field), so keeping history
-- costs about a command per submit, claim and end. Array parents are not counted when they end:
-- their children are. (Prepended to enqueue.lua and, through moving_script!, every script that
-- claims or ends jobs.)

-- Upper bounds (ms) of the wait and run-time bins: bin i holds times below HISTORY_BOUNDS[i + 1];
-- the last bin is open. history.rs's BOUNDS_MS is the same list.
local HISTORY_BOUNDS = {100, 300, 1000, 3000, 10000, 30000, 60000, 180000, 600000, 1800000, 3600000}

local function history_bin(ms)
  for i, b in ipairs(HISTORY_BOUNDS) do
    if ms < b then return i - 1 end
  end
  return #HISTORY_BOUNDS
end

-- Adds 1 to `field` of the bucket of the minute of `now` (ms).
local function history_count(ctx, now, field)
  local ttl = tonumber(ctx.history_ttl or 0)
  if ttl <= 0 then return end
  local key = ctx.history .. string.format('%d', math.floor(tonumber(now) / 60000))
  if redis.call('HINCRBY', key, field, 1) == 1 then redis.call('EXPIRE', key, ttl) end
end

-- A claim started an attempt; `reply` holds the job's hash as flat field/value pairs from index
-- `from` (claim.lua's HGETALL of the record: no second read), looked through without building a
-- table.
local function history_started(ctx, now, reply, from)
  if tonumber(ctx.history_ttl or 0) <= 0 then return end
  local queue, tenant, attempt, created = '', '', 1, now
  for i = from, #reply - 1, 2 do
    local k = reply[i]
    if k == 'queue' then queue = reply[i + 1]
    elseif k == 'tenant' then tenant = reply[i + 1]
    elseif k == 'attempt' then attempt = tonumber(reply[i + 1])
    elseif k == 'created_ms' then created = tonumber(reply[i + 1]) end
  end
  local base = queue .. '|' .. tenant .. '|'
  if attempt > 1 then
    history_count(ctx, now, base .. 'restart')
  else
    history_count(ctx, now, base .. 'start|' .. history_bin(now - created))
  end
end

-- The image of the job at `jk` (or of its array, `parent`): read only for failures.
local function history_image(ctx, jk, parent)
  local spec = redis.call('HGET', parent and (ctx.job .. parent) or jk, 'spec')
  local ok, s = pcall(cjson.decode, spec or '')
  return ok and type(s) == 'table' and type(s.image) == 'string' and s.image or '?'
end

-- The job at `jk` ended in `state` at `now`; `ran`: an attempt was running (its run time is
-- binned); `code`: the error code of a failure. `f`: its {queue, tenant, started_ms, parent}
-- when the caller read them already.
local function history_ended(ctx, now, state, jk, ran, code, f)
  if tonumber(ctx.history_ttl or 0) <= 0 then return end
  f = f or redis.call('HMGET', jk, 'queue', 'tenant', 'started_ms', 'parent')
  local base = (f[1] or '') .. '|' .. (f[2] or '') .. '|'
  local bin = (ran and f[3]) and history_bin(tonumber(now) - tonumber(f[3])) or '-'
  history_count(ctx, now, base .. state .. '|' .. bin)
  if code and code ~= '' and (state == 'failed' or state == 'timed_out') then
    history_count(ctx, now, base .. 'code|' .. code .. '|' .. history_image(ctx, jk, f[4]))
  end
end
