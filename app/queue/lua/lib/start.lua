-- start(k, a): take the request's lease and mark it running (app/queue/records.py; state names:
-- RequestState). k: record, lease, running hash. a: worker, now, record ttl, lease ttl (ms),
-- request id. Returns the new epoch (>= 1: started; the record's ``attempts`` after the increment,
-- the fencing token of this delivery), 0 finished or cancelled, -1 another delivery holds a live
-- lease (a duplicate: drop it, the holder is running it).
local function start(k, a)
  local s = redis.call('HGET', k[1], 'state')
  if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return 0 end
  if redis.call('HGET', k[1], 'cancel') == '1' then return 0 end
  if redis.call('EXISTS', k[2]) == 1 then return -1 end
  redis.call('SET', k[2], a[1], 'PX', a[4])
  redis.call('HSET', k[3], a[5], a[1])
  redis.call('HSET', k[1], 'state', 'running', 'worker', a[1], 'started_at', a[2], 'progress', '0')
  local epoch = redis.call('HINCRBY', k[1], 'attempts', 1)
  redis.call('EXPIRE', k[1], a[3])
  return epoch
end
