-- Delete: every Redis trace of a job goes; the caller removes its files from storage first.
-- Also the retention sweep ('expired' mode), which only deletes ended jobs whose time has come.
-- KEYS[1]: the job's hash (DEL)
-- KEYS[2]: the job's tenant list in its lane (LREM)
-- KEYS[3]: the job's queue running zset (ZREM)
-- KEYS[4]: the expiry zset (ZREM)
-- KEYS[5]: the job index zset (ZREM)
-- KEYS[6]: the job's blob hash (DEL; fast jobs keep their files there)
-- KEYS[7]: the fast-data byte counter (DECRBY what the blob hash still held)
-- KEYS[8]: the job's tenant index zset (ZREM)
-- KEYS[9]: the tenants' active-job counts (a job deleted before it ended leaves its tenant's)
-- KEYS[10]: the webhook outbox (a gone job's delivery is dropped with it)
-- ARGV[1]: job id
-- ARGV[2]: now (ms)
-- ARGV[3]: events channel
-- ARGV[4]: 'any' (DELETE route) | 'expired' (retention sweep)
-- ARGV[5]: workers' channel prefix (a running job's worker hears of it on its own channel)
-- ARGV[6]: the settle context of deps.lua (a job deleted before it ended settles its
--          dependents as `deleted`; an ended job's were settled when it ended)
-- An array parent takes every child made with it (records, list and running entries; a running
-- child's worker is told), built from ctx.job and its id ('<id>.<i>'); the caller removed their
-- files first.
-- Returns: the state it had | 'kept' (expired mode, not due) | false (no such job)
-- (Uses history.lua, active.lua (leave_active), notify.lua (notify_end), wake.lua (wake_idle),
-- deps.lua (settle_dependents) and array.lua, of the helpers library.rs puts first.)
local ctx = cjson.decode(ARGV[6])

-- Drops the children of an array parent; how many were never made (nil: not an array).
local function drop_children()
  local f = redis.call('HMGET', KEYS[1], 'array_size', 'next_index')
  if not f[1] then return nil end
  local made = tonumber(f[2] or '0')
  for i = 0, made - 1 do
    local cid = ARGV[1] .. '.' .. i
    local ck = ctx.job .. cid
    local c = redis.call('HMGET', ck, 'state', 'attempt', 'worker')
    if c[1] == 'queued' or c[1] == 'running' then
      leave_active(KEYS[9], ck)
      redis.call('LREM', KEYS[2], 0, cid)
      redis.call('ZREM', KEYS[3], cid)
      if c[1] == 'running' and c[3] and c[3] ~= '' then
        redis.call('PUBLISH', ARGV[5] .. c[3], cjson.encode({jobId = cid, status = 'deleted',
          attempt = tonumber(c[2]), at = tonumber(ARGV[2]), worker = c[3]}))
      end
    end
    redis.call('ZREM', KEYS[4], cid)
    redis.call('DEL', ck)
  end
  local unmade = tonumber(f[1]) - made
  local active = redis.call('HGET', KEYS[1], 'state')
  if (active == 'queued' or active == 'running') and not redis.call('HGET', KEYS[1], 'blocked') then
    count_backlog(ctx, KEYS[1], -unmade)
  end
  return unmade
end

local function drop_blob()
  local held = 0
  for _, f in ipairs(redis.call('HKEYS', KEYS[6])) do
    held = held + redis.call('HSTRLEN', KEYS[6], f)
  end
  redis.call('DEL', KEYS[6])
  if held > 0 and redis.call('DECRBY', KEYS[7], held) < 0 then redis.call('SET', KEYS[7], 0) end
end
local job = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'worker')
if not job[1] then
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[8], ARGV[1])
  redis.call('ZREM', KEYS[10], ARGV[1])
  drop_blob()
  return false
end
if ARGV[4] == 'expired' then
  if job[1] == 'queued' or job[1] == 'running' then
    redis.call('ZREM', KEYS[4], ARGV[1])
    return 'kept'
  end
  local due = redis.call('ZSCORE', KEYS[4], ARGV[1])
  if due and tonumber(due) > tonumber(ARGV[2]) then return 'kept' end
end
local unmade = drop_children()
if job[1] == 'queued' or job[1] == 'running' then
  leave_active(KEYS[9], KEYS[1], unmade)
  settle_dependents(ctx, ARGV[1], 'deleted', ARGV[2], KEYS[9], KEYS[4], KEYS[10])
end
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
redis.call('ZREM', KEYS[10], ARGV[1])
redis.call('DEL', KEYS[1])
drop_blob()
local event = cjson.encode({jobId = ARGV[1], status = 'deleted', attempt = tonumber(job[2]),
  at = tonumber(ARGV[2]), worker = job[3] or ''})
redis.call('PUBLISH', ARGV[3], event)
if job[1] == 'running' and job[3] then redis.call('PUBLISH', ARGV[5] .. job[3], event) end
return job[1]
