-- Take or keep the autoscaler lock (autoscale/leader.py).
-- KEYS[1] lock, KEYS[2] term counter; ARGV[1] candidate id, ARGV[2] TTL (ms), ARGV[3] the term the caller holds ('' if none).
-- Returns the caller's term while it leads (a new, higher one when it just took the lock), else 0.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(ARGV[3])
end
return 0
