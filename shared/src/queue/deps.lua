-- settle_dependents(ctx, id, outcome, now, active, expiry, outbox): job `id` just ended as
-- `outcome` (succeeded | failed | timed_out | cancelled | deleted); settle the jobs that wait
-- for it (`dependsOn`), in the same transition as its end, so no dependent is ever left
-- waiting for an event that already happened and nothing polls.
-- - A dependent that only needed `id` to end, or needed it to succeed and it did, has one
--   dependency fewer; with none left it becomes claimable: into its tenant's list in its lane,
--   its tenant into the lane's ring, one idle worker of its queue woken.
-- - A dependent that needed `id` to succeed, and it did not, fails at once with
--   DEPENDENCY_FAILED (it never ran), and its own dependents are settled in turn.
-- Dependents that are no longer blocked and queued (cancelled, deleted) are skipped.
-- Keys touched, built from ctx's prefixes (they share the hash tag of every key):
--   ctx.deps .. id (HASH dependent -> kind; read, then DEL), ctx.job .. dependent (its record),
--   ctx.lanes .. queue .. ':' .. lane [':t:' .. tenant] and its ':ring', ctx.idle .. queue;
--   and the keys passed in: `active` (quota counts), `expiry` (retention), `outbox` (webhooks).
-- ctx: {job, deps, lanes, idle, events, workers, keep} (prefixes, the events channel, the
-- workers' channel prefix, retention in ms of a failed dependent).
-- (Prepended, after active.lua, notify.lua and wake.lua, to the scripts that end a job:
-- finish, cancel, reap and delete.)
local function settle_dependents(ctx, id, outcome, now, active, expiry, outbox)
  now = tonumber(now)
  local work = {{id, outcome}}
  while #work > 0 do
    local ended = table.remove(work)
    local dk = ctx.deps .. ended[1]
    local waiting = redis.call('HGETALL', dk)
    -- (most jobs have no dependents: nothing to delete)
    if #waiting > 0 then redis.call('DEL', dk) end
    for i = 1, #waiting, 2 do
      local d, kind = waiting[i], waiting[i + 1]
      local jk = ctx.job .. d
      local j = redis.call('HMGET', jk, 'state', 'blocked', 'queue', 'lane', 'tenant')
      if j[1] == 'queued' and tonumber(j[2] or '0') > 0 then
        if kind == 'ended' or ended[2] == 'succeeded' then
          if redis.call('HINCRBY', jk, 'blocked', -1) <= 0 then
            redis.call('HDEL', jk, 'blocked')
            count_backlog(ctx, jk, tonumber(redis.call('HGET', jk, 'array_size') or '0'))
            local tenant = j[5] or ''
            local base = ctx.lanes .. j[3] .. ':' .. j[4]
            redis.call('LPUSH', tenant == '' and base or (base .. ':t:' .. tenant), d)
            if not redis.call('LPOS', base .. ':ring', tenant) then
              redis.call('RPUSH', base .. ':ring', tenant)
            end
            wake_idle(ctx.idle .. j[3], ctx.workers,
              cjson.encode({jobId = d, status = 'queued', attempt = 0, at = now}))
          end
        else
          -- an array parent counted all its children, none of which was made
          leave_active(active, jk, tonumber(redis.call('HGET', jk, 'array_size') or '1'))
          redis.call('HDEL', jk, 'blocked')
          redis.call('HSET', jk, 'state', 'failed', 'finished_ms', now, 'error_code', 'DEPENDENCY_FAILED',
            'error_msg', 'dependency ' .. ended[1] .. ' ended ' .. ended[2] .. ' instead of succeeding; the job did not run')
          redis.call('ZADD', expiry, now + ctx.keep, d)
          notify_end(outbox, jk, d, now)
          history_ended(ctx, now, 'failed', jk, false, 'DEPENDENCY_FAILED', {j[3], j[5], false, false})
          redis.call('PUBLISH', ctx.events, cjson.encode({jobId = d, status = 'failed', attempt = 0, at = now}))
          work[#work + 1] = {d, 'failed'}
        end
      end
    end
  end
end
