-- Outbox settle: the server that took a delivery records how it went, fenced by the attempt it
-- took: a server whose delivery lease ran out (another took the delivery again) changes nothing.
-- KEYS[1]: the outbox zset (removed when settled, re-scored for a retry)
-- KEYS[2]: the job's hash (notify_state, notify_last_ms, notify_error)
-- ARGV[1]: job id
-- ARGV[2]: the attempt taken
-- ARGV[3]: 'delivered' | 'retry' | 'failed'
-- ARGV[4]: now (ms); 0: Redis's clock
-- ARGV[5]: ms until the next try ('retry')
-- ARGV[6]: why it failed ('' when delivered)
-- Returns: 1 recorded | 0 fenced off (taken again meanwhile, or the job is gone)
-- (Loaded with lease_now.lua prepended.)
local d = redis.call('HMGET', KEYS[2], 'notify_state', 'notify_attempts')
if d[1] ~= 'delivering' or d[2] ~= ARGV[2] then return 0 end
local now = lease_now(ARGV[4])
redis.call('HSET', KEYS[2], 'notify_last_ms', now, 'notify_error', ARGV[6])
if ARGV[3] == 'retry' then
  redis.call('HSET', KEYS[2], 'notify_state', 'pending')
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
else
  redis.call('HSET', KEYS[2], 'notify_state', ARGV[3])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
