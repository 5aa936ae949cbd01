-- A task's end in one round trip (app/queue/lifecycle.py end): terminal state, terminal event, and
-- for the lease holder its run time, the lease release and leaving the worker's task set.
-- KEYS: record, per-request stream, sink, sink counter, lease, running hash, worker's task set,
-- stale-write counter, the service's run times (app/queue/run_times.py). ARGV: state, record ttl,
-- request id, worker ('' = not the lease holder: release nothing), data, tags JSON, to sink, sink
-- cap, epoch ('' = unfenced), run times kept, then the terminal fields (ARGV[12]: finished_at).
-- The lease holder's succeeded or failed run adds its run time (state names: RequestState).
-- Returns {moved, final state}, or {-2, current epoch} when the epoch is stale (refused).
-- include: lib/finish.lua
-- include: lib/release.lua
-- include: lib/stale.lua
-- include: lib/emit.lua
-- include: lib/record_run.lua
if stale(KEYS[1], KEYS[8], ARGV[9]) then
  if redis.call('HGET', KEYS[6], ARGV[3]) ~= ARGV[4] then redis.call('SREM', KEYS[7], ARGV[3]) end
  return {-2, redis.call('HGET', KEYS[1], 'attempts') or ''}
end
local moved = finish(KEYS[1], ARGV[1], ARGV[2], {unpack(ARGV, 11)})
if moved == 1 then emit({KEYS[2], KEYS[3], KEYS[4]}, {ARGV[5], ARGV[6], ARGV[2], ARGV[7], ARGV[8]}) end
if ARGV[4] ~= '' then
  if moved == 1 and ARGV[1] ~= 'cancelled' then
    record_run(KEYS[9], redis.call('HGET', KEYS[1], 'started_at'), ARGV[12], ARGV[10])
  end
  release(KEYS[5], KEYS[6], ARGV[3], ARGV[4])
  redis.call('SREM', KEYS[7], ARGV[3])
end
return {moved, redis.call('HGET', KEYS[1], 'state') or ''}
