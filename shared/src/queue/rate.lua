-- Rate: one submit against a tenant's token bucket, shared by every API server. Redis's clock
-- (TIME) refills it, so the servers' clocks do not matter.
-- KEYS[1]: the tenant's bucket hash (tokens, at: ms of the last refill); expires when full again
-- ARGV[1]: tokens per second
-- ARGV[2]: bucket size (the burst)
-- Returns: 0 when admitted (one token taken), else the ms until a token is there
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
