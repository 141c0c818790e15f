-- Finish: the worker holding the lease records the result of its attempt, exactly once.
-- KEYS[1]: the job's hash (fencing check, then the result fields)
-- KEYS[2]: the queue's running zset (the lease ends)
-- KEYS[3]: the expiry zset (retention starts)
-- KEYS[4]: the tenants' active-job counts (the job leaves its tenant's)
-- KEYS[5]: the webhook outbox (a job with `notify` gets its delivery queued: notify.lua)
-- ARGV[1]: job id
-- ARGV[2]: attempt the worker ran
-- ARGV[3]: worker id
-- ARGV[4]: final state (succeeded | failed | timed_out)
-- ARGV[5]: now (ms)
-- ARGV[6]: end of retention (ms)
-- ARGV[7]: events channel
-- ARGV[8]: the settle context of deps.lua (the job's dependents are settled: its lanes, idle
--          workers and dependents' records, built from the context's prefixes)
-- ARGV[9]: the container's run time (ms, its stats' run_ms), for the event
-- ARGV[10], ARGV[11], ARGV[12]: the history's key prefix and TTL (s; 0: none kept) and the
--          dependents' prefix, as in the context (which is decoded only for a job that has
--          dependents or is an array's child: context.lua)
-- ARGV[13..]: field/value pairs of the result (exit_code, error_code, error_msg, digest, stats, outputs)
-- The event carries the job's queue, queue wait and run time: every API server counts ended jobs
-- in its metrics from the event alone (a read of the record per job per server otherwise).
-- Returns: 1 recorded | 0 lease lost (a stale or cancelled attempt changes nothing)
-- Counted in the minute's history (history.lua), by run time; failures by code and image.
-- (Uses context.lua (settle_context, json_string), history.lua, active.lua (leave_active),
-- notify.lua (notify_end), wake.lua (wake_idle), deps.lua (settle_dependents) and array.lua (a
-- child's parent counts it), of the helpers library.rs puts first.)
-- (one read of the record for every helper below: quotas, webhook, history)
local job = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'worker', 'parent', 'queue', 'tenant', 'started_ms',
  'lane', 'notify_state', 'created_ms')
if job[1] ~= 'running' or job[2] ~= ARGV[2] or job[3] ~= ARGV[3] then return 0 end
local code = nil
for i = 13, #ARGV - 1, 2 do
  if ARGV[i] == 'error_code' then code = ARGV[i + 1] end
end
leave_active(KEYS[4], KEYS[1], 1, {job[6], job[8]})
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'finished_ms', ARGV[5], unpack(ARGV, 13))
redis.call('ZREM', KEYS[2], ARGV[1])
-- (an array child goes with its parent: no retention of its own)
if not job[4] then redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1]) end
notify_end(KEYS[5], KEYS[1], ARGV[1], ARGV[5], job[9])
local ctx = settle_context(ARGV[8], {history = ARGV[10], history_ttl = ARGV[11], deps = ARGV[12]})
history_ended(ctx, ARGV[5], ARGV[4], KEYS[1], true, code, {job[5], job[6], job[7], job[4]})
settle_dependents(ctx, ARGV[1], ARGV[4], ARGV[5], KEYS[4], KEYS[3], KEYS[5])
if job[4] then array_child_ended(ctx, ARGV[1], KEYS[1], ARGV[4], true, ARGV[5], KEYS[4], KEYS[3], KEYS[5], job[4]) end
local wait = ''
if job[7] and job[10] then wait = ',"waitMs":' .. (tonumber(job[7]) - tonumber(job[10])) end
redis.call('PUBLISH', ARGV[7], '{"jobId":' .. json_string(ARGV[1]) .. ',"status":"' .. ARGV[4] .. '","attempt":' ..
  ARGV[2] .. ',"at":' .. ARGV[5] .. ',"worker":' .. json_string(ARGV[3]) .. ',"queue":"' .. (job[5] or '') ..
  '","runMs":' .. ARGV[9] .. wait .. '}')
return 1
