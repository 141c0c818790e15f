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
-- Returns: {'cancelled', previous state} | {'final', state} | {'missing'}
-- (Loaded with active.lua (leave_active), notify.lua (notify_end), wake.lua (wake_idle) and
-- deps.lua (settle_dependents) prepended.)
local job = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'worker')
if not job[1] then return {'missing'} end
if job[1] == 'queued' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
elseif job[1] == 'running' then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  return {'final', job[1]}
end
leave_active(KEYS[5], KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_ms', ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
notify_end(KEYS[6], KEYS[1], ARGV[1], ARGV[2])
settle_dependents(cjson.decode(ARGV[6]), ARGV[1], 'cancelled', ARGV[2], KEYS[5], KEYS[4], KEYS[6])
local event = cjson.encode({jobId = ARGV[1], status = 'cancelled', attempt = tonumber(job[2]),
  at = tonumber(ARGV[2]), worker = job[3] or ''})
redis.call('PUBLISH', ARGV[4], event)
if job[1] == 'running' and job[3] then redis.call('PUBLISH', ARGV[5] .. job[3], event) end
return {'cancelled', job[1]}
