-- Renew: a worker extends the leases of the attempts it still holds (its heartbeat), all of one
-- shard's in one call: a worker running many jobs renews them in one round trip and one script
-- run, not one each (with jobs of minutes, renewals were most of a job's Redis time).
-- KEYS[1], KEYS[2]: the running zsets of the cpu and gpu queues (the new deadlines)
-- KEYS[3..]: each lease's job hash (read: state, attempt and worker are the fencing token)
-- ARGV[1]: now (ms); 0: Redis's clock
-- ARGV[2]: lease length (ms)
-- ARGV[3..]: per lease, in KEYS order: job id, attempt, worker id, queue (1 cpu, 2 gpu)
-- Returns: per lease, 1 renewed | 0 the lease is lost (cancelled, deleted, reaped or claimed
-- again): stop the container
-- (Uses lease_now.lua, of the helpers library.rs puts first.)
local now = lease_now(ARGV[1])
local deadline = now + tonumber(ARGV[2])
local held = {}
for i = 3, #KEYS do
  local a = 3 + (i - 3) * 4
  local job = redis.call('HMGET', KEYS[i], 'state', 'attempt', 'worker')
  if job[1] == 'running' and job[2] == ARGV[a + 1] and job[3] == ARGV[a + 2] then
    redis.call('ZADD', KEYS[tonumber(ARGV[a + 3])], deadline, ARGV[a])
    held[i - 2] = 1
  else
    held[i - 2] = 0
  end
end
return held
