-- Submit: a new job enters its queue. Checks the same-id rule before writing anything.
-- KEYS[1]: the job's hash (created here)
-- KEYS[2]: the tenant's list in the job's lane (LPUSH here; claims take the oldest: FIFO)
-- KEYS[3]: the job index zset (score: creation time; the listing pages through it)
-- KEYS[4]: the submitting tenant's job index zset (its own listing)
-- KEYS[5]: the tenants' active-job counts (the new job counts against its tenant's quotas)
-- KEYS[6]: the lane's ring of tenants with waiting jobs (the tenant joins it at the back)
-- KEYS[7]: the queue's idle workers (one is woken: wake.lua)
-- ARGV[1]: job id
-- ARGV[2]: definition hash (same id + same hash = the same job)
-- ARGV[3]: now (ms)
-- ARGV[4]: events channel
-- ARGV[5]: the submitting tenant
-- ARGV[6]: its quota of queued + running jobs (0: none)
-- ARGV[7]: its quota of queued + running fast jobs (0: none)
-- ARGV[8]: '1' for a fast job
-- ARGV[9]: workers' channel prefix (the woken worker's channel)
-- ARGV[10..]: field/value pairs of the new record
-- Returns: 'created' | 'exists' (same id, same definition, same tenant, both fast or both
-- standard: nothing written) | 'conflict' (same id, other definition, another tenant's, or a
-- fast job's id for a standard one or back: nothing of that job is told) |
-- 'quota' | 'fast_quota' (the tenant is at its quota: nothing written)
-- (Loaded with wake.lua (wake_idle) prepended.)
local existing = redis.call('HMGET', KEYS[1], 'def_hash', 'tenant', 'lane')
local tenant, fast = ARGV[5], ARGV[8] == '1'
if existing[1] then
  -- A fast submit answers with the job and then is deleted by clients that ran it (the 2018
  -- adapter's turbo calls): it must never be taken for a standard job of the same definition.
  local same_lane = (existing[3] == 'fast') == fast
  if existing[1] == ARGV[2] and (existing[2] or '') == ARGV[5] and same_lane then return 'exists' end
  return 'conflict'
end
local active = tonumber(redis.call('HGET', KEYS[5], tenant) or '0')
if tonumber(ARGV[6]) > 0 and active >= tonumber(ARGV[6]) then return 'quota' end
if fast and tonumber(ARGV[7]) > 0 and tonumber(redis.call('HGET', KEYS[5], tenant .. ':fast') or '0') >= tonumber(ARGV[7]) then
  return 'fast_quota'
end
redis.call('HINCRBY', KEYS[5], tenant, 1)
if fast then redis.call('HINCRBY', KEYS[5], tenant .. ':fast', 1) end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('LPUSH', KEYS[2], ARGV[1])
if tenant ~= '' and not redis.call('LPOS', KEYS[6], tenant) then redis.call('RPUSH', KEYS[6], tenant) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
local event = cjson.encode({jobId = ARGV[1], status = 'queued', attempt = 0, at = tonumber(ARGV[3])})
redis.call('PUBLISH', ARGV[4], event)
wake_idle(KEYS[7], ARGV[9], event)
return 'created'
