-- Release: a worker hands a job it still holds back to the head of its lane without using up an
-- attempt (graceful drain ran out of time, spot reclaim). The attempt number stays monotonic (it is
-- the fencing token); `released` counts the attempts that do not count against maxAttempts.
-- KEYS[1]: the job's hash (fencing check, then state and counters)
-- KEYS[2]: the queue's running zset (the lease ends)
-- KEYS[3..5]: the queue's lanes (fast, high, normal): bases of the tenants' lists and rings
--            ('<lane>:t:<tenant>', '<lane>:ring'), built here from the job's tenant
-- ARGV[1]: job id
-- ARGV[2]: attempt the worker holds
-- ARGV[3]: worker id
-- ARGV[4]: now (ms)
-- KEYS[6]: the queue's idle workers (one is woken: wake.lua)
-- ARGV[5]: events channel
-- ARGV[6]: workers' channel prefix (the woken worker's channel)
-- ARGV[7]: the settle context of deps.lua (an array child's parent is built from its prefix)
-- Returns: 1 released | 0 the lease was already lost (nothing changes)
-- (Uses history.lua, active.lua, notify.lua, wake.lua (wake_idle), deps.lua and array.lua (a child's
-- parent counts it back as waiting), of the helpers library.rs puts first.)
local job = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'worker', 'lane')
if job[1] ~= 'running' or job[2] ~= ARGV[2] or job[3] ~= ARGV[3] then return 0 end
local lanes = {fast = KEYS[3], high = KEYS[4], normal = KEYS[5]}
redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '')
redis.call('HINCRBY', KEYS[1], 'released', 1)
array_child_requeued(cjson.decode(ARGV[7]), KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
-- back to the head of its tenant's list (the oldest end), and into the lane's ring
local base = lanes[job[4]] or KEYS[5]
local tenant = redis.call('HGET', KEYS[1], 'tenant') or ''
local list = tenant == '' and base or (base .. ':t:' .. tenant)
redis.call('RPUSH', list, ARGV[1])
if not redis.call('LPOS', base .. ':ring', tenant) then redis.call('RPUSH', base .. ':ring', tenant) end
local event = cjson.encode({jobId = ARGV[1], status = 'queued', attempt = tonumber(ARGV[2]), at = tonumber(ARGV[4])})
redis.call('PUBLISH', ARGV[5], event)
wake_idle(KEYS[6], ARGV[6], event)
return 1
