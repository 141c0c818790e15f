-- Prepended to the lease scripts (claim, renew, reap): `now` is Redis's own clock (TIME) when
-- the caller passes 0, as production does — one clock for the whole fleet, so a host whose clock
-- runs fast cannot expire everybody's leases. Tests pass a time to drive expiry without sleeping.
local function lease_now(arg)
  local now = tonumber(arg)
  if now == 0 then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
