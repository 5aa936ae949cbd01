-- A write of the current leader term only (autoscale/leader.py Fence).
-- KEYS[1] lock, KEYS[2] term counter, KEYS[3] hash to write (optional);
-- ARGV[1] holder id, ARGV[2] its term, ARGV[3] 'hset' | 'check', ARGV[4] field, ARGV[5] value.
-- Returns 1 when the caller leads in that term (and the write was made), 0 when it was refused.
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if ARGV[3] == 'hset' then
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
end
return 1
