-- Store one fast-job file in Redis, within the budget for all fast-job data, so a flood of fast
-- jobs fills the budget, never Redis's memory (a full Redis would stop every queue).
-- KEYS[1]: the job's blob hash (HSET the file)
-- KEYS[2]: the fast-data byte counter (INCRBY the growth)
-- ARGV[1]: the file's name (hash field)
-- ARGV[2]: its bytes
-- ARGV[3]: the budget in bytes
-- Returns: the growth in bytes, or -1 when it would pass the budget (nothing written)
local old = redis.call('HSTRLEN', KEYS[1], ARGV[1])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local delta = #ARGV[2] - old
if delta > 0 and used + delta > tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[2], delta)
return delta
