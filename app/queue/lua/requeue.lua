-- Back to queued when the request's lease expired (app/queue/records.py requeue_if_orphaned;
-- state names: RequestState). KEYS[1] record, KEYS[2] lease, KEYS[3] running hash; ARGV[1] request id.
-- Returns 1 when the caller must re-enqueue it.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local s = redis.call('HGET', KEYS[1], 'state')
redis.call('HDEL', KEYS[3], ARGV[1])
if s ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '', 'progress', '0')
return 1
