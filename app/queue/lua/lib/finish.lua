-- finish(k, state, ttl, fields): move a request record (app/queue/records.py) to a terminal state
-- unless it already is terminal; 1 if it moved. The state names are RequestState's (records.py).
local function finish(k, state, ttl, fields)
  local s = redis.call('HGET', k, 'state')
  if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return 0 end
  redis.call('HSET', k, 'state', state, unpack(fields))
  redis.call('EXPIRE', k, ttl)
  return 1
end
