-- Array jobs: a parent (the submitted job, never run itself) and its children `<parent>.<i>`,
-- made one at a time by claim.lua as workers take them. A child's record holds only what is
-- its own (state, attempt, worker, result) and what scripts read from it (queue, lane, tenant,
-- slots, gpus, memory_mb); the spec stays on the parent. The parent counts its children:
-- `next_index` (made so far), `c_running`, and one `c_<state>` per end state.
-- These helpers keep the parent's counts as children stop running and end, in the script that
-- moves the child. Keys touched: the child's record (read `parent`) and the parent's record,
-- built from ctx.job; when the last child ends, what ending the parent touches (see
-- array_end_parent), with the keys passed in: `active`, `expiry`, `outbox`.
-- (Prepended, after active.lua, notify.lua, wake.lua and deps.lua, to the scripts that move a
-- running child: finish, cancel, reap, release and delete.)

-- The parent's id of the job at `jk`, or nil for a job that is not a child.
local function array_parent(jk)
  return redis.call('HGET', jk, 'parent')
end

-- The parent `p` ends, all its children having ended: `succeeded` when all of them did, else
-- `failed` (CHILDREN_FAILED, with the counts); retention starts, its webhook and its dependents
-- are settled as for any job.
local function array_end_parent(ctx, p, now, active, expiry, outbox)
  local pk = ctx.job .. p
  local c = redis.call('HMGET', pk, 'array_size', 'c_succeeded', 'c_failed', 'c_timed_out', 'c_cancelled', 'state')
  if c[6] ~= 'queued' and c[6] ~= 'running' then return end
  local size, ok = tonumber(c[1]), tonumber(c[2] or '0')
  local state = 'succeeded'
  if ok == size then
    redis.call('HSET', pk, 'state', 'succeeded', 'finished_ms', now)
  else
    state = 'failed'
    redis.call('HSET', pk, 'state', 'failed', 'finished_ms', now, 'error_code', 'CHILDREN_FAILED',
      'error_msg', (size - ok) .. ' of ' .. size .. ' children did not succeed (' .. (c[3] or 0) .. ' failed, ' ..
      (c[4] or 0) .. ' timed out, ' .. (c[5] or 0) .. ' cancelled)')
  end
  -- the array's own retention, kept at submit (the claim that fails its last child has none)
  redis.call('ZADD', expiry, now + (tonumber(redis.call('HGET', pk, 'keep') or '') or ctx.keep), p)
  notify_end(outbox, pk, p, now)
  redis.call('PUBLISH', ctx.events, cjson.encode({jobId = p, status = state, attempt = 0, at = now}))
  settle_dependents(ctx, p, state, now, active, expiry, outbox)
end

-- A child at `jk` stopped running without ending (its lease expired, or its worker handed it
-- back): it waits in its lane again.
local function array_child_requeued(ctx, jk)
  local p = array_parent(jk)
  if p then redis.call('HINCRBY', ctx.job .. p, 'c_running', -1) end
end

-- A child at `jk` ended as `state` (succeeded | failed | timed_out | cancelled); `was_running`:
-- it held a lease. When it was the last, the parent ends. One read and one write of the parent.
-- A child goes with its parent (retention, delete): it leaves `expiry`, where the script that
-- ended it put it as any job (finish.lua does not: it passes `p`, the parent it read).
local function array_child_ended(ctx, id, jk, state, was_running, now, active, expiry, outbox, p)
  if not p then
    p = array_parent(jk)
    if not p then return end
    redis.call('ZREM', expiry, id)
  end
  now = tonumber(now)
  local pk = ctx.job .. p
  local names = {'array_size', 'c_succeeded', 'c_failed', 'c_timed_out', 'c_cancelled', 'c_running'}
  local c = redis.call('HMGET', pk, unpack(names))
  local at = ({succeeded = 2, failed = 3, timed_out = 4, cancelled = 5})[state]
  c[at] = tonumber(c[at] or '0') + 1
  local counts = {names[at], c[at]}
  if was_running then
    counts[3], counts[4] = 'c_running', math.max(0, tonumber(c[6] or '0') - 1)
  end
  redis.call('HSET', pk, unpack(counts))
  local ended = 0
  for i = 2, 5 do ended = ended + tonumber(c[i] or '0') end
  if ended >= tonumber(c[1]) then array_end_parent(ctx, p, now, active, expiry, outbox) end
end
