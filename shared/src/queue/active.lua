-- Prepended to the scripts that end a job (finish, cancel, reap, delete): the job stops
-- counting against its tenant's quotas (queued + running, and fast ones) in the hash `active`.
-- `n` (default 1): how many jobs stop counting (an array parent's children not yet made). `t`:
-- the job's {tenant, lane} when the caller read them already.
local function leave_active(active, jk, n, t)
  n = n or 1
  t = t or redis.call('HMGET', jk, 'tenant', 'lane')
  if not t[1] or t[1] == '' or n <= 0 then return end
  if redis.call('HINCRBY', active, t[1], -n) < 0 then redis.call('HSET', active, t[1], 0) end
  if t[2] == 'fast' and redis.call('HINCRBY', active, t[1] .. ':fast', -n) < 0 then
    redis.call('HSET', active, t[1] .. ':fast', 0)
  end
end

-- An array's children not made yet wait in no list (their parent is one entry): the queue depth
-- the API and the scaler read counts them from the hash `ctx.backlog` (field `<queue>` and
-- `<queue>:<tenant>`). `n` children of the array at `jk` join it (> 0) or leave it (< 0).
local function count_backlog(ctx, jk, n)
  if n == 0 then return end
  local f = redis.call('HMGET', jk, 'queue', 'tenant')
  redis.call('HINCRBY', ctx.backlog, f[1], n)
  redis.call('HINCRBY', ctx.backlog, f[1] .. ':' .. (f[2] or ''), n)
end
