-- include: lib/append.lua
-- emit(k, a): one request event (app/queue/output.py). k: per-request stream, sink, sink counter;
-- a: data, tags JSON, record TTL, to sink ('1'/'0'), sink cap. Returns the sink index or false.
local function emit(k, a)
  redis.call('XADD', k[1], 'MAXLEN', '~', 10000, '*', 'data', a[1], 'tags', a[2])
  redis.call('EXPIRE', k[1], a[3])
  if a[4] ~= '1' then return false end
  return append(k[2], k[3], a[5], a[1], a[2])
end
