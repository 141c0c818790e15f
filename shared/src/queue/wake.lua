-- wake_idle(idle, prefix, event): a job just became claimable; tell one idle worker of its queue,
-- on that worker's own channel (prefix .. id): the one that had the most free room when its
-- last claim found nothing (ZPOPMAX of the queue's idle zset). Only that worker claims, instead
-- of every worker of the fleet hearing every event and racing for each job. A worker whose
-- channel nobody hears (it died) is dropped and the next one tried, a few at most. Workers not
-- woken still poll every couple of seconds (the safety net when the woken one cannot fit the job).
-- (Prepended to enqueue.lua, release.lua and reap.lua.)
local function wake_idle(idle, prefix, event)
  for _ = 1, 4 do
    local w = redis.call('ZPOPMAX', idle)
    if #w == 0 then return end
    if redis.call('PUBLISH', prefix .. w[1], event) > 0 then return end
  end
end
