-- One round trip for a whole service (app/queue/workers.py snapshot): every worker's entry, its
-- running request ids and when the first of them started. Read-only; ~10x cheaper for the client
-- than a 2-commands-per-worker pipeline, which is what keeps an autoscaler tick under a few ms.
-- KEYS[1] the service's worker set. ARGV: what comes before and after the name in a worker key
-- (1, 2), in a worker's task-set key (3, 4) and in a request key (5, 6): app/core/keys.py's layout.
-- Returns {name, HGETALL, running ids, started_at or ''} per worker.
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local running = redis.call('SMEMBERS', ARGV[3] .. n .. ARGV[4])
  local started = ''
  if #running > 0 then started = redis.call('HGET', ARGV[5] .. running[1] .. ARGV[6], 'started_at') or '' end
  out[#out + 1] = {n, redis.call('HGETALL', ARGV[1] .. n .. ARGV[2]), running, started}
end
return out
