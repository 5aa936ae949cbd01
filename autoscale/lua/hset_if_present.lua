-- Update a field only if it still exists: a spawn's pid is filled in after the fork, but an entry a
-- newer leader already expired must not come back. KEYS[1] hash; ARGV[1] field, ARGV[2] value.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
