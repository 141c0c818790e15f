-- Renew: a worker extends the lease of an attempt it still holds (its heartbeat).
-- KEYS[1]: the job's hash (read: state, attempt and worker are the fencing token)
-- KEYS[2]: the queue's running zset (the new deadline)
-- ARGV[1]: job id
-- ARGV[2]: attempt the worker runs
-- ARGV[3]: worker id
-- ARGV[4]: now (ms); 0: Redis's clock
-- ARGV[5]: lease length (ms)
-- Returns: 1 renewed | 0 the lease is lost (cancelled, deleted, reaped or claimed again): stop the container
-- (Loaded with lease_now.lua prepended.)
local now = lease_now(ARGV[4])
local job = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'worker')
if job[1] ~= 'running' or job[2] ~= ARGV[2] or job[3] ~= ARGV[3] then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
return 1
