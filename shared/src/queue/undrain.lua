-- Undrain: a drained worker claims again (it notices on its next heartbeat).
-- KEYS[1]: the worker's health hash (must exist: only live workers are undrained)
-- KEYS[2]: the worker's drain flag (DEL)
-- Returns: 1 when the worker is live (flag gone, whether or not it was set), 0 when no live
-- worker has this id
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
