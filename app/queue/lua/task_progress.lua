-- A running request's progress and its progress event (app/queue/lifecycle.py progress).
-- KEYS: the emit keys (lib/emit.lua), record, stale-write counter. ARGV: the emit args, progress, epoch.
-- Returns the sink index, nil, or -2 when the epoch is stale (refused).
-- include: lib/stale.lua
-- include: lib/emit.lua
if stale(KEYS[4], KEYS[5], ARGV[7]) then return -2 end
redis.call('HSET', KEYS[4], 'progress', ARGV[6])
return emit(KEYS, ARGV)
