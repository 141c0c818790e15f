-- Claim: the oldest job that fits this worker, in the first lane that has one (fast, high,
-- normal), goes to the worker with a lease. A job needing more than the worker has in all (CPU
-- slots or GPUs, memory) can never run here: it is stepped over, so it does not block the jobs
-- behind it. Among the jobs that fit, order is FIFO: if the oldest needs more than is free now,
-- nothing is claimed ('nofit') rather than letting smaller jobs overtake it for ever. The scan
-- looks at most ARGV[11] entries per lane, so a claim stays O(1) however long the lane.
-- Ids are read here, so job keys are built from ARGV[1]; they share the hash tag of KEYS.
-- KEYS[1..3]: the queue's lane lists in claim order (fast, high, normal); oldest at the tail
-- KEYS[4]: the queue's running zset (score: lease deadline, ms)
-- ARGV[1]: job key prefix ('{p}:job:')
-- ARGV[2]: worker id
-- ARGV[3]: the worker's free slots now
-- ARGV[4]: the worker's total slots
-- ARGV[5]: now (ms); 0: Redis's clock
-- ARGV[6]: lease length (ms)
-- ARGV[7]: events channel
-- ARGV[8]: the job field holding what the job needs of the worker ('slots' for CPU, 'gpus' for GPU)
-- ARGV[9]: the worker's free memory now (MiB)
-- ARGV[10]: the worker's total memory (MiB)
-- ARGV[11]: most entries looked at per lane
-- Returns: {'claimed', id, attempt, slots, lane, memory_mb} | {'nofit', id} | {'empty'}
-- `now` is Redis's own clock (TIME) when the caller passes 0, as production does: one clock for
-- the whole fleet, so a host whose clock runs fast cannot expire everybody's leases.
local now = tonumber(ARGV[5])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local lanes = {'fast', 'high', 'normal'}
local free, total = tonumber(ARGV[3]), tonumber(ARGV[4])
local free_mem, total_mem = tonumber(ARGV[9]), tonumber(ARGV[10])
local scan = tonumber(ARGV[11])
for i = 1, 3 do
  -- LRANGE -n -1 lists the oldest n, newest first: walk it backwards.
  local ids = redis.call('LRANGE', KEYS[i], -scan, -1)
  for j = #ids, 1, -1 do
    local id = ids[j]
    local jk = ARGV[1] .. id
    local job = redis.call('HMGET', jk, 'state', ARGV[8], 'memory_mb')
    if job[1] ~= 'queued' then
      -- a stale entry (the job was deleted or cancelled while queued): drop it
      redis.call('LREM', KEYS[i], -1, id)
    else
      local slots = tonumber(job[2]) or 1
      local mem = tonumber(job[3]) or 0
      if slots <= total and mem <= total_mem then
        if slots > free or mem > free_mem then return {'nofit', id} end
        redis.call('LREM', KEYS[i], -1, id)
        local attempt = redis.call('HINCRBY', jk, 'attempt', 1)
        redis.call('HSET', jk, 'state', 'running', 'worker', ARGV[2], 'started_ms', now)
        redis.call('ZADD', KEYS[4], now + tonumber(ARGV[6]), id)
        redis.call('PUBLISH', ARGV[7], cjson.encode({jobId = id, status = 'running', attempt = attempt,
          at = now, worker = ARGV[2]}))
        return {'claimed', id, attempt, slots, lanes[i], mem}
      end
    end
  end
end
return {'empty'}
