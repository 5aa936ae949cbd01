-- Set a live worker's state (app/queue/workers.py set_state_if_present); never resurrects an
-- expired entry. KEYS[1] worker hash; ARGV[1] state. Returns -1 when the entry is gone.
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'state', ARGV[1]) end
return -1
