-- Outbox take: a server takes the webhook deliveries that are due, each under a delivery lease.
-- Safe for every server to run at once: a delivery taken is pushed past the lease, so no other
-- server sees it due until then (a server that dies mid-delivery leaves it due again: at least
-- once). Job keys are built from ARGV[1]; they share the hash tag.
-- KEYS[1]: the outbox zset (ids scored by when their next try is due)
-- ARGV[1]: job key prefix ('{p}:job:'); each job's notify_state / notify_attempts change here
-- ARGV[2]: now (ms); 0: Redis's clock
-- ARGV[3]: delivery lease (ms)
-- ARGV[4]: most deliveries taken
-- Returns: {id, attempt, id, attempt, ...} (the attempt fences the settle script)
-- (Loaded with lease_now.lua prepended.)
local now = lease_now(ARGV[2])
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  local jk = ARGV[1] .. id
  local state = redis.call('HGET', jk, 'notify_state')
  if state == 'pending' or state == 'delivering' then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
    local attempt = redis.call('HINCRBY', jk, 'notify_attempts', 1)
    redis.call('HSET', jk, 'notify_state', 'delivering')
    out[#out + 1] = id
    out[#out + 1] = tostring(attempt)
  else
    -- the job is gone (deleted, retention) or its delivery settled: nothing to send
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
