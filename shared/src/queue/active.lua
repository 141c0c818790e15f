-- Prepended to the scripts that end a job (finish, cancel, reap, delete): the job stops
-- counting against its tenant's quotas (queued + running, and fast ones) in the hash `active`.
local function leave_active(active, jk)
  local t = redis.call('HMGET', jk, 'tenant', 'lane')
  if not t[1] or t[1] == '' then return end
  if redis.call('HINCRBY', active, t[1], -1) < 0 then redis.call('HSET', active, t[1], 0) end
  if t[2] == 'fast' and redis.call('HINCRBY', active, t[1] .. ':fast', -1) < 0 then
    redis.call('HSET', active, t[1] .. ':fast', 0)
  end
end
