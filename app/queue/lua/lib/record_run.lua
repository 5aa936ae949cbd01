-- record_run(list key, started_at, finished_at, kept): push one run time of a service
-- (app/queue/run_times.py), keep the newest ``kept`` (run_times.KEPT).
local function record_run(k, started, finished, kept)
  local s, f = tonumber(started), tonumber(finished)
  if s and f and f >= s then
    redis.call('LPUSH', k, string.format('%.3f', f - s))
    redis.call('LTRIM', k, 0, tonumber(kept) - 1)
  end
end
