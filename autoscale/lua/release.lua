-- Give the autoscaler lock back, only if the caller still holds it (a new leader's lock is never dropped).
-- KEYS[1] lock; ARGV[1] holder id.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
