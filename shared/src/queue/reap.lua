-- Reap: attempts whose lease ran out go back to the head of their lane (attempt + 1 at the next
-- claim), or end `failed` with WORKER_LOST after the last attempt. Idempotent: safe for every
-- server and worker to run at once. Job keys are built from ARGV[1]; they share the hash tag.
-- KEYS[1]: a queue's running zset (entries with deadline <= now are expired)
-- KEYS[2..4]: that queue's lanes (fast, high, normal): bases of the tenants' lists and rings
--            ('<lane>:t:<tenant>', '<lane>:ring'), built here from the job's tenant
-- KEYS[5]: the expiry zset (retention of failed jobs)
-- KEYS[6]: the tenants' active-job counts (a failed job leaves its tenant's)
-- KEYS[7]: the queue's idle workers (one is woken per job put back: wake.lua)
-- KEYS[8]: the webhook outbox (a failed job with `notify` gets its delivery queued: notify.lua)
-- ARGV[1]: job key prefix ('{p}:job:')
-- ARGV[2]: now (ms); 0: Redis's clock
-- ARGV[3]: retention (ms) of standard jobs
-- ARGV[6]: retention (ms) of fast jobs (their result is kept only briefly)
-- ARGV[4]: events channel
-- ARGV[5]: most leases handled in one call (bounds the script's run time)
-- ARGV[7]: workers' channel prefix (the woken workers' channels)
-- ARGV[8]: the settle context of deps.lua (a failed job's dependents are settled)
-- Returns: {requeued, failed}
-- A failed job is counted in the minute's history (history.lua).
-- (Uses history.lua, lease_now.lua, active.lua (leave_active), notify.lua (notify_end), wake.lua
-- (wake_idle), deps.lua (settle_dependents) and array.lua (a child's parent counts it), of the helpers library.rs puts first.)
local lanes = {fast = KEYS[2], high = KEYS[3], normal = KEYS[4]}
local now = lease_now(ARGV[2])
local ctx = cjson.decode(ARGV[8])
local requeued, failed = 0, 0
-- Every script that queues a job puts its tenant ('' too) in the lane's ring, and claims look
-- only at rings. Jobs queued by a version that left '' out wait in the lanes' own lists: '' joins
-- the ring here, within a reaper pass (not in every claim).
for i = 2, 4 do
  local ring = KEYS[i] .. ':ring'
  if redis.call('LLEN', KEYS[i]) > 0 and not redis.call('LPOS', ring, '') then redis.call('RPUSH', ring, '') end
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local jk = ARGV[1] .. id
  local job = redis.call('HMGET', jk, 'state', 'attempt', 'max_attempts', 'lane', 'worker', 'released')
  if job[1] == 'running' then
    local attempt = tonumber(job[2]) or 0
    -- attempts handed back by a draining worker (release.lua) do not count
    local used = attempt - (tonumber(job[6]) or 0)
    if used >= (tonumber(job[3]) or 1) then
      leave_active(KEYS[6], jk)
      redis.call('HSET', jk, 'state', 'failed', 'finished_ms', now, 'error_code', 'WORKER_LOST',
        'error_msg', 'worker ' .. (job[5] or '?') .. ' stopped renewing its lease during attempt ' .. attempt ..
        ', the last of its ' .. job[3] .. ' attempts')
      local keep = job[4] == 'fast' and tonumber(ARGV[6]) or tonumber(ARGV[3])
      redis.call('ZADD', KEYS[5], now + keep, id)
      notify_end(KEYS[8], jk, id, now)
      history_ended(ctx, now, 'failed', jk, true, 'WORKER_LOST')
      settle_dependents(ctx, id, 'failed', now, KEYS[6], KEYS[5], KEYS[8])
      array_child_ended(ctx, id, jk, 'failed', true, now, KEYS[6], KEYS[5], KEYS[8])
      redis.call('PUBLISH', ARGV[4], cjson.encode({jobId = id, status = 'failed', attempt = attempt, at = now,
        worker = job[5] or ''}))
      failed = failed + 1
    else
      redis.call('HSET', jk, 'state', 'queued', 'worker', '')
      array_child_requeued(ctx, jk)
      -- back to the head of its tenant's list (the oldest end), and into the lane's ring
      local base = lanes[job[4]] or KEYS[4]
      local tenant = redis.call('HGET', jk, 'tenant') or ''
      local list = tenant == '' and base or (base .. ':t:' .. tenant)
      redis.call('RPUSH', list, id)
      if not redis.call('LPOS', base .. ':ring', tenant) then redis.call('RPUSH', base .. ':ring', tenant) end
      local event = cjson.encode({jobId = id, status = 'queued', attempt = attempt, at = now})
      redis.call('PUBLISH', ARGV[4], event)
      wake_idle(KEYS[7], ARGV[7], event)
      requeued = requeued + 1
    end
  end
end
return {requeued, failed}
