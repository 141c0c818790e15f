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
-- Returns: the state it had | 'kept' (expired mode, not due) | false (no such job)
-- (Loaded with active.lua (leave_active), notify.lua (notify_end), wake.lua (wake_idle) and
-- deps.lua (settle_dependents) prepended.)
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
if job[1] == 'queued' or job[1] == 'running' then
  leave_active(KEYS[9], KEYS[1])
  settle_dependents(cjson.decode(ARGV[6]), ARGV[1], 'deleted', ARGV[2], KEYS[9], KEYS[4], KEYS[10])
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
