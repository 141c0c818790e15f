-- Claim: the next job that fits this worker goes to it, with a lease. Lanes in order (fast,
-- high, normal); within a lane, tenants take turns (the lane's ring: the tenant that gets a claim
-- goes to the back, so one tenant's backlog never starves another's job); within a tenant, FIFO.
-- A job needing more than the worker has in all (CPU slots or GPUs, memory) can never run here:
-- it is stepped over, so it does not block the jobs behind it. If the oldest job of a tenant that
-- fits needs more than is free now, that tenant waits ('nofit' when no other tenant of the lane
-- has a job to claim; lower lanes never overtake it). Scans are bounded (ARGV[11] entries per
-- tenant list, ARGV[12] tenants per lane), so a claim stays cheap however long the queue.
-- Ids and tenant lists are read here, so their keys are built from ARGV[1] and KEYS[1..3]; they
-- share the hash tag of KEYS.
-- KEYS[1..3]: the queue's lanes in claim order (fast, high, normal): each the base of its
--             tenants' lists ('<lane>:t:<tenant>') and ring ('<lane>:ring'), and itself the list
--             of tenant '' (jobs queued before tenants existed; '' takes turns in the ring too,
--             put there by whatever queued the job, or by reap.lua for older entries)
-- KEYS[4]: the queue's running zset (score: lease deadline, ms)
-- KEYS[5]: the queue's idle workers: a claim that finds nothing puts its worker there with its
--          free slots (the next claimable job wakes it: wake.lua), one that takes a job removes it
-- ARGV[1]: job key prefix ('{p}:job:')
-- ARGV[2]: worker id
-- ARGV[3]: the worker's free slots now
-- ARGV[4]: the worker's total slots
-- ARGV[5]: now (ms); 0: Redis's clock
-- ARGV[6]: lease length (ms)
-- ARGV[7]: events channel
-- ARGV[8]: the job field holding what the job needs of the worker ('slots' for CPU, 'gpus' for GPU)
-- ARGV[9]: the worker's free memory now (MiB)
-- ARGV[10]: the worker's total memory (MiB)
-- ARGV[11]: most entries looked at per tenant list
-- ARGV[12]: most tenants looked at per lane
-- ARGV[13]: the settle context of deps.lua (an n_to_n child whose twin did not succeed is made
--           failed here: its array counts it, and may end, as in finish.lua)
-- KEYS[6..8]: the tenants' active-job counts, the expiry zset and the webhook outbox (for such a
--             child and its array)
-- ARGV[14], ARGV[15]: the history's key prefix and TTL (s; 0: none kept), as in the context
-- ARGV[16]: '1' when the worker may be in KEYS[5] (its last claim here found nothing, or its
--           process does not know): a claim that takes a job takes it out; '0' skips that write
-- Returns: {'claimed', id, attempt, slots, lane, memory_mb, {field, value, ...}[, spec]} (the
-- job's hash as it is after the claim, and a child's `spec`, read from its parent: the worker
-- needs no second read) | {'nofit', id} | {'empty'}
-- Arrays: a parent's id stays in its tenant's list until each of its children was made. Taking
-- it makes the next child `<parent>.<i>` (its record, running, with this lease), unless the
-- parent has `array_par` children running already: then it is stepped over, like a job that
-- does not fit now, and the jobs behind it may run. A child put back (lease lost, handed back)
-- is in the list by its own id and claimed as any job. Child and parent records are built from
-- ARGV[1] like every job's.
-- n_to_n (the parent's `n2n`, another array of its size): child i is made only once child i of
-- that array succeeded; until then the parent is stepped over; when that child ended otherwise
-- (or that array ended without making it), child i is made `failed` (DEPENDENCY_FAILED) without
-- running, and the next index is looked at.
-- A started attempt is counted in the minute's history (history.lua), by its queue wait.
-- (Loaded after the helpers of library.rs: context.lua … array.lua.)

-- Each call's own values, set first by each call (below `-- (each call)`): the functions that
-- follow are made once, when the library loads (library.rs), and read them as upvalues.
local now, ctx, free, total, free_mem, total_mem, scan, max_tenants
local lanes = {'fast', 'high', 'normal'}

-- Makes the next child of the array parent `id`, its record written at once as it is to be:
-- ...`fields` (running with this lease's first attempt when `running`, or failed unrun), and
-- returns its id and the parent's spec; the parent leaves `list` with its last child made, and
-- is `running` from its first. One read and one write of the parent: this is every child's
-- dispatch.
local function make_child(id, list, running, ...)
  local pk = ARGV[1] .. id
  local f = redis.call('HMGET', pk, 'array_size', 'queue', 'lane', 'tenant', 'slots', 'gpus', 'memory_mb',
    'max_attempts', 'created_ms', 'inputs_prefix', 'state', 'spec', 'next_index', 'c_running')
  local index = tonumber(f[13] or '0')
  local parent = {'next_index', index + 1}
  if running then
    parent[3] = 'c_running'
    parent[4] = tonumber(f[14] or '0') + 1
  end
  if f[11] == 'queued' then
    local n = #parent
    parent[n + 1], parent[n + 2], parent[n + 3], parent[n + 4] = 'state', 'running', 'started_ms', now
    redis.call('PUBLISH', ARGV[7], cjson.encode({jobId = id, status = 'running', attempt = 0, at = now}))
  end
  redis.call('HSET', pk, unpack(parent))
  if index + 1 >= tonumber(f[1]) then redis.call('LREM', list, -1, id) end
  -- count_backlog, from the fields just read
  redis.call('HINCRBY', ctx.backlog, f[2], -1)
  redis.call('HINCRBY', ctx.backlog, f[2] .. ':' .. (f[4] or ''), -1)
  local child = id .. '.' .. index
  redis.call('HSET', ARGV[1] .. child, 'parent', id, 'index', index, 'queue', f[2], 'lane', f[3],
    'tenant', f[4] or '', 'slots', f[5], 'gpus', f[6], 'memory_mb', f[7], 'max_attempts', f[8],
    'created_ms', f[9], 'inputs_prefix', f[10] or '', ...)
  return child, f[12]
end

-- Whether child `next_index` of array `id` may be made: its twin in array `twin` succeeded.
-- Twins that ended otherwise (or will never be made) fail their child here, without running it,
-- and the next index is looked at; false: wait (the twin has not ended), or none left.
local function twin_succeeded(id, twin, list)
  local pk, tk = ARGV[1] .. id, ARGV[1] .. twin
  while true do
    local f = redis.call('HMGET', pk, 'next_index', 'array_size', 'state')
    local index = tonumber(f[1] or '0')
    if index >= tonumber(f[2]) or (f[3] ~= 'queued' and f[3] ~= 'running') then return false end
    local t = redis.call('HGET', tk .. '.' .. index, 'state')
    if t == 'succeeded' then return true end
    local twin_state = redis.call('HGET', tk, 'state')
    local never = not t and twin_state ~= 'queued' and twin_state ~= 'running'
    if t ~= 'failed' and t ~= 'timed_out' and t ~= 'cancelled' and not never then return false end
    local child = make_child(id, list, false, 'state', 'failed', 'attempt', 0, 'finished_ms', now,
      'error_code', 'DEPENDENCY_FAILED', 'error_msg', 'its twin ' .. twin .. '.' .. index .. ' ended ' ..
      (t or 'without running') .. ' instead of succeeding; the job did not run')
    local ck = ARGV[1] .. child
    redis.call('PUBLISH', ARGV[7], cjson.encode({jobId = child, status = 'failed', attempt = 0, at = now}))
    leave_active(KEYS[6], ck)
    local q = redis.call('HMGET', pk, 'queue', 'tenant')
      history_ended(ctx, now, 'failed', ck, false, 'DEPENDENCY_FAILED', {q[1], q[2], false, id})
    array_child_ended(ctx, child, ck, 'failed', false, now, KEYS[6], KEYS[7], KEYS[8])
  end
end

-- What a claim makes of entry `id` of `list`: {'take', id, slots, mem, array, parent, attempt,
-- popped} | {'wait', id} | nil (stepped over, or a stale entry dropped). `array`: the entry is an
-- array parent (take its next child); `parent`: it is an array child put back (false otherwise).
-- `popped`: the entry was popped off the list's tail (pick's oldest): taken as it is, it is out
-- of the list already; anything else puts it back where it was before looking further, so the
-- list is as it was for the rest (an array's last child made removes the parent from it).
local function consider(list, id, popped)
  -- (an array parent's own fields are read only for one: each field read costs about as much as
  -- a short command, and most entries are plain jobs)
  local job = redis.call('HMGET', ARGV[1] .. id, 'state', ARGV[8], 'memory_mb', 'array_size', 'parent', 'attempt')
  local state, size, parent, attempt = job[1], job[4], job[5], tonumber(job[6] or '0')
  local slots = tonumber(job[2]) or 1
  local mem = tonumber(job[3]) or 0
  local array = size ~= false and size ~= nil
  local made, par, running, n2n = 0, 0, 0, false
  if array then
    local a = redis.call('HMGET', ARGV[1] .. id, 'next_index', 'array_par', 'c_running', 'n2n')
    made, par, running, n2n = tonumber(a[1] or '0'), tonumber(a[2] or '0'), tonumber(a[3] or '0'), a[4]
  end
  local open = state == 'queued' or (array and state == 'running')
  if not open or (array and made >= tonumber(size)) then
    -- a stale entry (deleted or cancelled while queued; an array with every child made): drop it
    if not popped then redis.call('LREM', list, -1, id) end
    return nil
  end
  if popped then
    if not array and slots <= math.min(free, total) and mem <= math.min(free_mem, total_mem) then
      return {'take', id, slots, mem, false, parent, attempt, true}
    end
    redis.call('RPUSH', list, id)
  end
  if array and par > 0 and running >= par then
    -- an array at its parallelism: its next child waits for one to end; others go first
  elseif array and n2n and not twin_succeeded(id, n2n, list) then
    -- n_to_n: its next child's twin has not succeeded (yet)
  elseif slots <= total and mem <= total_mem then
    if slots > free or mem > free_mem then return {'wait', id} end
    return {'take', id, slots, mem, array, parent, attempt, false}
  end
  return nil
end

-- The oldest job of `list` that fits this worker (see `consider`), nil when none does. The oldest
-- alone is looked at first: it is nearly always the one taken, and a window of `scan` ids costs a
-- reply of that size. It is popped (RPOP, put back unless taken as it is): taking it then needs
-- no LREM.
local function pick(list)
  local oldest = redis.call('RPOP', list)
  if not oldest then return nil end
  local first = consider(list, oldest, true)
  if first then return first end
  -- LRANGE -n -1 lists the oldest n, newest first: walk it backwards, past the oldest.
  local ids = redis.call('LRANGE', list, -scan, -1)
  for j = #ids, 1, -1 do
    if ids[j] ~= oldest then
      local p = consider(list, ids[j], false)
      if p then return p end
    end
  end
  return nil
end

-- Takes `p` (pick's 'take') from `tenant`'s `list` in lane `i`: the lease, the tenant's turn
-- used (to the back of the ring: the `front` tenant is there already; out of it with nothing
-- left), the event; returns the claim's reply.
local function take(i, ring, tenant, list, p, front)
  local id, parent, spec = p[2], nil, nil
  local attempt = 1
  if p[5] then
    -- a new child: made running, its first attempt this one
    parent = id
    id, spec = make_child(id, list, true, 'state', 'running', 'attempt', 1, 'worker', ARGV[2], 'started_ms', now)
  elseif not p[8] then
    redis.call('LREM', list, -1, id)
  end
  if redis.call('LLEN', list) == 0 then
    redis.call('LREM', ring, 0, tenant)
  elseif not front then
    redis.call('LREM', ring, 0, tenant)
    redis.call('RPUSH', ring, tenant)
  end
  local jk = ARGV[1] .. id
  if ARGV[16] == '1' then redis.call('ZREM', KEYS[5], ARGV[2]) end
  if not parent then
    attempt = p[7] + 1
    redis.call('HSET', jk, 'attempt', attempt, 'state', 'running', 'worker', ARGV[2], 'started_ms', now)
    -- a child put back, claimed again
    parent = p[6]
  end
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[6]), id)
  redis.call('PUBLISH', ARGV[7], '{"jobId":' .. json_string(id) .. ',"status":"running","attempt":' .. attempt ..
    ',"at":' .. now .. ',"worker":' .. json_string(ARGV[2]) .. '}')
  -- (the record goes back as it came from HGETALL, not copied into the reply)
  local record = redis.call('HGETALL', jk)
  history_started(ctx, now, record, 1)
  local reply = {'claimed', id, attempt, p[3], lanes[i], p[4], record}
  if parent then
    -- (a new child was counted running when made)
    if not spec then redis.call('HINCRBY', ARGV[1] .. parent, 'c_running', 1) end
    reply[8] = spec or redis.call('HGET', ARGV[1] .. parent, 'spec')
  end
  return reply
end

-- `tenant`'s turn in lane `i`: the claim's reply, or nil and the id of a job that fits this
-- worker once it has room (nil: nothing of this tenant fits). A tenant with an empty list
-- leaves the ring. `front`: the tenant was the ring's front, moved to its back before its turn
-- (where a claim leaves it): a turn not used moves it back to the front.
local function turn(i, ring, tenant, front)
  local list = tenant == '' and KEYS[i] or (KEYS[i] .. ':t:' .. tenant)
  local p = pick(list)
  if p ~= nil and p[1] == 'take' then return take(i, ring, tenant, list, p, front), nil end
  if p == nil and redis.call('LLEN', list) == 0 then
    redis.call('LREM', ring, 0, tenant)
  elseif front then
    redis.call('LMOVE', ring, ring, 'RIGHT', 'LEFT')
  end
  return nil, p and p[2]
end

-- (each call)
now = lease_now(ARGV[5])
free, total = tonumber(ARGV[3]), tonumber(ARGV[4])
free_mem, total_mem = tonumber(ARGV[9]), tonumber(ARGV[10])
scan, max_tenants = tonumber(ARGV[11]), tonumber(ARGV[12])
-- The settle context is decoded only for array children (made, or failed unrun): most claims
-- never need it. History counts come as plain arguments (context.lua).
ctx = settle_context(ARGV[13], {history = ARGV[14], history_ttl = ARGV[15]})
-- Most claims find the fast and high lanes empty: one EXISTS of both rings, instead of a LINDEX
-- of each, sends them straight to the normal lane (a lane with nothing in its ring has nothing
-- a claim would look at).
local first_lane = 1
if redis.call('EXISTS', KEYS[1] .. ':ring', KEYS[2] .. ':ring') == 0 then first_lane = 3 end
for i = first_lane, 3 do
  local ring = KEYS[i] .. ':ring'
  local waiting = nil
  -- The front tenant alone first: it is nearly always the one served, and a ring of many
  -- tenants costs a reply of that size. The rest of the first `max_tenants` are read only when
  -- it had nothing to take now. It goes to the back as it is read (LMOVE): where a claim leaves
  -- it, with no second move (turn moves it back when it had nothing to take).
  local front = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  if front then
    local reply, wait = turn(i, ring, front, true)
    if reply then return reply end
    waiting = wait
    if max_tenants > 1 then
      for _, tenant in ipairs(redis.call('LRANGE', ring, 0, max_tenants - 1)) do
        if tenant ~= front then
          reply, wait = turn(i, ring, tenant, false)
          if reply then return reply end
          waiting = waiting or wait
        end
      end
    end
  end
  if waiting then
    redis.call('ZADD', KEYS[5], free, ARGV[2])
    return {'nofit', waiting}
  end
end
redis.call('ZADD', KEYS[5], free, ARGV[2])
return {'empty'}
