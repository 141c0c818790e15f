-- Remove fast-job files from Redis and give their bytes back to the budget.
-- KEYS[1]: the job's blob hash (HDEL the files)
-- KEYS[2]: the fast-data byte counter (DECRBY what was freed; never below 0)
-- ARGV[1..n]: the files' names
-- Returns: bytes freed
local freed = 0
for i = 1, #ARGV do
  freed = freed + redis.call('HSTRLEN', KEYS[1], ARGV[i])
end
if #ARGV > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV)) end
if redis.call('DECRBY', KEYS[2], freed) < 0 then redis.call('SET', KEYS[2], 0) end
return freed
