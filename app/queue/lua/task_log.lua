-- A log line of the current delivery only (app/queue/lifecycle.py log_line).
-- KEYS: the emit keys (lib/emit.lua), record, stale-write counter. ARGV: the emit args, epoch.
-- Returns the sink index, nil, or -2 when the epoch is stale (refused).
-- include: lib/stale.lua
-- include: lib/emit.lua
if stale(KEYS[4], KEYS[5], ARGV[6]) then return -2 end
return emit(KEYS, ARGV)
