-- release(lease, running, id, worker): drop the lease of a finished or abandoned request.
local function release(lease, running, id, worker)
  if redis.call('GET', lease) == worker then redis.call('DEL', lease) end
  if redis.call('HGET', running, id) == worker then redis.call('HDEL', running, id) end
  return 1
end
