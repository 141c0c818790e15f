-- Drain: ask one live worker to stop claiming. The flag holds the worker's instance nonce, so a
-- later process that reuses the id (a restart) is not drained by a request meant for the old one,
-- and it expires with the worker's health key (the worker's beat extends both together), so it
-- never outlives the worker it was set for.
-- KEYS[1]: the worker's health hash (must exist: only live workers drain)
-- KEYS[2]: the worker's drain flag (SET with the health key's remaining TTL)
-- Returns: 1 when the flag was set, 0 when no live worker has this id
local instance = redis.call('HGET', KEYS[1], 'instance')
if not instance then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = 60000 end
redis.call('SET', KEYS[2], instance, 'PX', ttl)
return 1
