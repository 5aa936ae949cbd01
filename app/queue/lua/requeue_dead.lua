-- A worker confirmed dead (its process and every command it started exited): drop its lease now,
-- compare-and-delete, so a lease another delivery took meanwhile is never touched
-- (app/queue/records.py requeue_of_dead; state names: RequestState).
-- KEYS[1] record, KEYS[2] lease, KEYS[3] running hash; ARGV[1] request id, ARGV[2] worker.
-- Returns 1 when the caller must re-enqueue it.
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[3], ARGV[1]) end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '', 'progress', '0')
return 1
