-- Cancel: a queued job never starts; a running one ends `cancelled` at once (its worker loses the
-- lease and kills the container on the event). An ended job does not change.
-- KEYS[1]: the job's hash
-- KEYS[2]: the job's tenant list in its lane (LREM when queued; claims drop the tenant from the
--          lane's ring once its list is empty)
-- KEYS[3]: the job's queue running zset (ZREM when running)
-- KEYS[4]: the expiry zset (retention starts)
-- KEYS[5]: the tenants' active-job counts (the job leaves its tenant's)
-- KEYS[6]: the webhook outbox (a job with `notify` gets its delivery queued: notify.lua)
-- ARGV[1]: job id
-- ARGV[2]: now (ms)
-- ARGV[3]: end of retention (ms)
-- ARGV[4]: events channel
-- ARGV[5]: workers' channel prefix (a running job's worker hears of it on its own channel)
-- ARGV[6]: the settle context of deps.lua (the job's dependents are settled as `cancelled`)
-- An array parent: every child made and not ended is cancelled as above (its worker told), the
-- children not yet made count as cancelled and stop counting against the quota, and the parent
-- leaves its list. Children are built from ctx.job and the parent's id ('<id>.<i>'). A child
-- cancelled on its own is counted by its parent (array.lua).
-- Each job cancelled (not the parent: its children) is counted in the minute's history.
-- Returns: {'cancelled', previous state} | {'final', state} | {'missing'}
-- (Uses history.lua, active.lua (leave_active), notify.lua (notify_end), wake.lua (wake_idle),
-- deps.lua (settle_dependents) and array.lua, of the helpers library.rs puts first.)
local ctx = cjson.decode(ARGV[6])

-- Cancels the children of the array parent ARGV[1] (see above).
local function cancel_children()
  local f = redis.call('HMGET', KEYS[1], 'array_size', 'next_index')
  local size, made = tonumber(f[1]), tonumber(f[2] or '0')
  for i = 0, made - 1 do
    local cid = ARGV[1] .. '.' .. i
    local ck = ctx.job .. cid
    local c = redis.call('HMGET', ck, 'state', 'attempt', 'worker')
    if c[1] == 'queued' or c[1] == 'running' then
      if c[1] == 'queued' then redis.call('LREM', KEYS[2], 0, cid) else redis.call('ZREM', KEYS[3], cid) end
      leave_active(KEYS[5], ck)
      redis.call('HSET', ck, 'state', 'cancelled', 'finished_ms', ARGV[2])
      history_ended(ctx, ARGV[2], 'cancelled', ck, c[1] == 'running')
      local event = cjson.encode({jobId = cid, status = 'cancelled', attempt = tonumber(c[2]),
        at = tonumber(ARGV[2]), worker = c[3] or ''})
      redis.call('PUBLISH', ARGV[4], event)
      if c[1] == 'running' and c[3] and c[3] ~= '' then redis.call('PUBLISH', ARGV[5] .. c[3], event) end
      redis.call('HINCRBY', KEYS[1], 'c_cancelled', 1)
      if c[1] == 'running' then redis.call('HINCRBY', KEYS[1], 'c_running', -1) end
    end
  end
  if size > made then
    -- (a blocked array never joined the backlog)
    if not redis.call('HGET', KEYS[1], 'blocked') then count_backlog(ctx, KEYS[1], made - size) end
    leave_active(KEYS[5], KEYS[1], size - made)
    redis.call('HINCRBY', KEYS[1], 'c_cancelled', size - made)
    redis.call('HSET', KEYS[1], 'next_index', size)
  end
  redis.call('LREM', KEYS[2], 0, ARGV[1])
end

local job = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'worker', 'array_size')
if not job[1] then return {'missing'} end
local array = job[4] ~= false and job[4] ~= nil
local previous = job[1]
if array and (job[1] == 'queued' or job[1] == 'running') then
  cancel_children()
  job[1] = 'array'
end
if job[1] == 'queued' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
elseif job[1] == 'running' then
  redis.call('ZREM', KEYS[3], ARGV[1])
elseif job[1] ~= 'array' then
  return {'final', job[1]}
end
if not array then
  leave_active(KEYS[5], KEYS[1])
  history_ended(ctx, ARGV[2], 'cancelled', KEYS[1], job[1] == 'running')
end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_ms', ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
notify_end(KEYS[6], KEYS[1], ARGV[1], ARGV[2])
settle_dependents(ctx, ARGV[1], 'cancelled', ARGV[2], KEYS[5], KEYS[4], KEYS[6])
array_child_ended(ctx, ARGV[1], KEYS[1], 'cancelled', job[1] == 'running', ARGV[2], KEYS[5], KEYS[4], KEYS[6])
local event = cjson.encode({jobId = ARGV[1], status = 'cancelled', attempt = tonumber(job[2]),
  at = tonumber(ARGV[2]), worker = job[3] or ''})
redis.call('PUBLISH', ARGV[4], event)
if job[1] == 'running' and job[3] then redis.call('PUBLISH', ARGV[5] .. job[3], event) end
return {'cancelled', previous}
