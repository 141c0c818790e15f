-- Claim: the oldest job of the first non-empty lane (fast, high, normal) goes to a worker, with a
-- lease. Ids are popped here, so job keys are built from ARGV[1]; they share the hash tag of KEYS.
-- KEYS[1..3]: the queue's lane lists in claim order (fast, high, normal)
-- KEYS[4]: the queue's running zset (score: lease deadline, ms)
-- ARGV[1]: job key prefix ('{p}:job:')
-- ARGV[2]: worker id
-- ARGV[3]: the worker's free slots now
-- ARGV[4]: the worker's total slots (a head job needing more can never run here: skip that lane)
-- ARGV[5]: now (ms)
-- ARGV[6]: lease length (ms)
-- ARGV[7]: events channel
-- ARGV[8]: the job field holding what the job needs of the worker ('slots' for CPU, 'gpus' for GPU)
-- Returns: {'claimed', id, attempt, slots, lane} | {'nofit', id} (head job needs more slots than are free) | {'empty'}
local lanes = {'fast', 'high', 'normal'}
local free = tonumber(ARGV[3])
local total = tonumber(ARGV[4])
for i = 1, 3 do
  while true do
    local id = redis.call('LINDEX', KEYS[i], -1)
    if not id then break end
    local jk = ARGV[1] .. id
    local job = redis.call('HMGET', jk, 'state', ARGV[8])
    if job[1] ~= 'queued' then
      -- a stale entry (the job was deleted or cancelled while queued): drop it, look again
      redis.call('RPOP', KEYS[i])
    else
      local slots = tonumber(job[2]) or 1
      if slots > total then break end
      if slots > free then return {'nofit', id} end
      redis.call('RPOP', KEYS[i])
      local attempt = redis.call('HINCRBY', jk, 'attempt', 1)
      redis.call('HSET', jk, 'state', 'running', 'worker', ARGV[2], 'started_ms', ARGV[5])
      redis.call('ZADD', KEYS[4], tonumber(ARGV[5]) + tonumber(ARGV[6]), id)
      redis.call('PUBLISH', ARGV[7], cjson.encode({jobId = id, status = 'running', attempt = attempt,
        at = tonumber(ARGV[5]), worker = ARGV[2]}))
      return {'claimed', id, attempt, slots, lanes[i]}
    end
  end
end
return {'empty'}
