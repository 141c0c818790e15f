-- Prepended to the scripts that end a job (finish, cancel, reap): a job with a completion
-- webhook (record field notify_state = 'waiting', set at enqueue) gets its delivery queued in
-- the outbox zset, due now, in the same script that ends it: no ended job misses its webhook,
-- whichever process ends it and whenever that process dies.
-- `state`: the job's notify_state when the caller read it already (false: none).
local function notify_end(outbox, jk, id, now, state)
  if state == nil then state = redis.call('HGET', jk, 'notify_state') end
  if state ~= 'waiting' then return end
  redis.call('HSET', jk, 'notify_state', 'pending')
  redis.call('ZADD', outbox, now, id)
end
