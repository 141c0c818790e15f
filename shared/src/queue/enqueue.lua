-- Submit: a new job enters its queue. Checks the same-id rule before writing anything.
-- KEYS[1]: the job's hash (created here)
-- KEYS[2]: the tenant's list in the job's lane (LPUSH here; claims take the oldest: FIFO)
-- KEYS[3]: the job index zset (score: creation time; the listing pages through it)
-- KEYS[4]: the submitting tenant's job index zset (its own listing)
-- KEYS[5]: the tenants' active-job counts (the new job counts against its tenant's quotas)
-- KEYS[6]: the lane's ring of tenants with waiting jobs (the tenant joins it at the back, when its
--          list was empty)
-- KEYS[7]: the queue's idle workers (one is woken: wake.lua)
-- KEYS[8]: the expiry zset (a job failed at submit by a dependency starts its retention)
-- KEYS[9]: the webhook outbox (such a job with `notify` gets its delivery queued: notify.lua)
-- ARGV[1]: job id
-- ARGV[2]: definition hash (same id + same hash = the same job)
-- ARGV[3]: now (ms)
-- ARGV[4]: events channel
-- ARGV[5]: the submitting tenant
-- ARGV[6]: its quota of queued + running jobs (0: none)
-- ARGV[7]: its quota of queued + running fast jobs (0: none)
-- ARGV[8]: '1' for a fast job
-- ARGV[9]: workers' channel prefix (the woken worker's channel)
-- ARGV[10]: how many jobs it counts as against the quota: 1, or an array's size (its children)
-- ARGV[11]: n, its number of dependencies (`dependsOn`)
-- ARGV[12..11+2n]: each dependency's job id and kind (succeeded | ended)
-- ARGV[12+2n]: the settle context of deps.lua (JSON: key prefixes; this script reads the
--              dependencies' records from ctx.job and registers in ctx.deps .. dependency;
--              decoded only for a job with dependencies or an array: context.lua)
-- ARGV[13+2n], ARGV[14+2n]: the history's key prefix and TTL (s; 0: none kept), as in the context
-- ARGV[15+2n..]: field/value pairs of the new record
-- Returns: 'created' | 'exists' (same id, same definition, same tenant, both fast or both
-- standard: nothing written) | 'conflict' (same id, other definition, another tenant's, or a
-- fast job's id for a standard one or back: nothing of that job is told) |
-- 'quota' | 'fast_quota' (the tenant is at its quota: nothing written) |
-- 'missing_dep:<i>' (dependency i is not a job of this tenant: nothing written) |
-- 'not_twin:<i>' (dependency i is n_to_n but not an array of the same size: nothing written) |
-- 'failed' (created, and failed at once with DEPENDENCY_FAILED: a `succeeded` dependency had
-- already ended otherwise)
-- A job with dependencies not yet ended is created queued but `blocked` (their count): it is
-- in no lane until deps.lua, run by the script that ends its last dependency, puts it there.
-- An n_to_n dependency (an array on an array of the same size) blocks nothing: it is kept as
-- the record's `n2n`, and claim.lua makes child i only once child i of it succeeded.
-- An array not blocked puts its children in the queue's backlog (count_backlog, ctx.backlog).
-- Counted in the minute's history (history.lua) as submitted, and a job failed here as ended.
-- (Uses context.lua, history.lua, active.lua (count_backlog), notify.lua (notify_end) and
-- wake.lua (wake_idle), of the helpers library.rs puts first.)
local existing = redis.call('HMGET', KEYS[1], 'def_hash', 'tenant', 'lane')
local tenant, fast = ARGV[5], ARGV[8] == '1'
if existing[1] then
  -- A fast submit answers with the job and then is deleted by clients that ran it (the 2018
  -- adapter's turbo calls): it must never be taken for a standard job of the same definition.
  local same_lane = (existing[3] == 'fast') == fast
  if existing[1] == ARGV[2] and (existing[2] or '') == ARGV[5] and same_lane then return 'exists' end
  return 'conflict'
end
local count = tonumber(ARGV[10])
local ndeps = tonumber(ARGV[11])
local ctx = settle_context(ARGV[12 + 2 * ndeps], {history = ARGV[13 + 2 * ndeps], history_ttl = ARGV[14 + 2 * ndeps]})
local fields = 15 + 2 * ndeps
local blocked, failed_by, n2n = {}, nil, nil
-- The new record's `queue` field, for its history counters.
local function record_queue()
  for i = fields, #ARGV - 1, 2 do
    if ARGV[i] == 'queue' then return ARGV[i + 1] end
  end
  return ''
end
for i = 0, ndeps - 1 do
  local dep, kind = ARGV[12 + 2 * i], ARGV[13 + 2 * i]
  local d = redis.call('HMGET', ctx.job .. dep, 'state', 'tenant')
  -- another tenant's job is answered as missing: its existence is not told
  if not d[1] or (d[2] or '') ~= tenant then return 'missing_dep:' .. i end
  if kind == 'n_to_n' then
    -- ARGV[10] is this job's size (it is an array: the spec says so)
    if redis.call('HGET', ctx.job .. dep, 'array_size') ~= ARGV[10] then return 'not_twin:' .. i end
    n2n = dep
  elseif d[1] == 'queued' or d[1] == 'running' then
    blocked[#blocked + 1] = {dep, kind}
  elseif kind ~= 'ended' and d[1] ~= 'succeeded' then
    failed_by = failed_by or {dep, d[1]}
  end
end
if failed_by then
  local now = tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], unpack(ARGV, fields))
  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_ms', now, 'error_code', 'DEPENDENCY_FAILED',
    'error_msg', 'dependency ' .. failed_by[1] .. ' had ended ' .. failed_by[2] .. ' instead of succeeding; the job did not run')
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  redis.call('ZADD', KEYS[4], now, ARGV[1])
  redis.call('ZADD', KEYS[8], now + ctx.keep, ARGV[1])
  notify_end(KEYS[9], KEYS[1], ARGV[1], now)
  redis.call('PUBLISH', ARGV[4], cjson.encode({jobId = ARGV[1], status = 'failed', attempt = 0, at = now}))
  history_count(ctx, now, record_queue() .. '|' .. tenant .. '|sub')
  history_ended(ctx, now, 'failed', KEYS[1], false, 'DEPENDENCY_FAILED', {record_queue(), tenant, false, false})
  return 'failed'
end
-- (the count is read only against a quota)
if tonumber(ARGV[6]) > 0 and tonumber(redis.call('HGET', KEYS[5], tenant) or '0') + count > tonumber(ARGV[6]) then
  return 'quota'
end
if fast and tonumber(ARGV[7]) > 0 and tonumber(redis.call('HGET', KEYS[5], tenant .. ':fast') or '0') >= tonumber(ARGV[7]) then
  return 'fast_quota'
end
redis.call('HINCRBY', KEYS[5], tenant, count)
if fast then redis.call('HINCRBY', KEYS[5], tenant .. ':fast', 1) end
redis.call('HSET', KEYS[1], unpack(ARGV, fields))
if n2n then redis.call('HSET', KEYS[1], 'n2n', n2n) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
local event = '{"jobId":' .. json_string(ARGV[1]) .. ',"status":"queued","attempt":0,"at":' .. ARGV[3] .. '}'
redis.call('PUBLISH', ARGV[4], event)
history_count(ctx, ARGV[3], record_queue() .. '|' .. tenant .. '|sub')
if #blocked > 0 then
  redis.call('HSET', KEYS[1], 'blocked', #blocked)
  for _, b in ipairs(blocked) do redis.call('HSET', ctx.deps .. b[1], ARGV[1], b[2]) end
  return 'created'
end
-- A tenant whose list held jobs already is in the ring: every script that queues a job puts its
-- tenant there, and claims drop a tenant only once its list is empty (jobs queued by a version
-- that left '' out are put there by the reaper: reap.lua). So the ring is searched only when the
-- list was empty (a tenant may stay in it with an empty list: cancel.lua), not for every job of
-- a backlog.
if redis.call('LPUSH', KEYS[2], ARGV[1]) == 1 and not redis.call('LPOS', KEYS[6], tenant) then
  redis.call('RPUSH', KEYS[6], tenant)
end
if ARGV[10] ~= '1' then count_backlog(ctx, KEYS[1], count) end
wake_idle(KEYS[7], ARGV[9], event)
return 'created'
