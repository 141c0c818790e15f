-- Submit: a new job enters its queue. Checks the same-id rule before writing anything.
-- KEYS[1]: the job's hash (created here)
-- KEYS[2]: the lane list of its queue (LPUSH here; claim RPOPs, so FIFO)
-- KEYS[3]: the job index zset (score: creation time; the listing pages through it)
-- ARGV[1]: job id
-- ARGV[2]: definition hash (same id + same hash = the same job)
-- ARGV[3]: now (ms)
-- ARGV[4]: events channel
-- ARGV[5..]: field/value pairs of the new record
-- Returns: 'created' | 'exists' (same id, same definition: nothing written) | 'conflict' (same id, other definition)
local existing = redis.call('HGET', KEYS[1], 'def_hash')
if existing then
  if existing == ARGV[2] then return 'exists' end
  return 'conflict'
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('PUBLISH', ARGV[4], cjson.encode({jobId = ARGV[1], status = 'queued', attempt = 0, at = tonumber(ARGV[3])}))
return 'created'
