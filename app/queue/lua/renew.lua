-- Compare-and-renew the leases a worker holds (app/queue/records.py renew_leases): a lease that
-- expired and was taken by another delivery is not extended.
-- KEYS: the leases; ARGV[1] worker, ARGV[2] ttl (ms). Returns, per lease, 1 renewed or 0.
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then out[i] = redis.call('PEXPIRE', k, ARGV[2]) else out[i] = 0 end
end
return out
