-- A task's start in one round trip (app/queue/lifecycle.py begin): create the record if the task
-- came straight through Celery, keep the message copy recovery needs, take the lease, mark it
-- running, join the worker's task set.
-- KEYS: record, lease, running hash, worker's task set, service's request index.
-- ARGV: worker, now, record ttl, lease ttl ms, request id, task-set ttl, message JSON ('' = not
-- sent: answer {2} if the record lacks one), then the fields of a new record.
-- Returns {1, epoch, tenant} started, {2} message needed, {-1, holder} duplicate, {0, state, cancel} not to run.
-- include: lib/start.lua
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 8))
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[5])
end
if redis.call('HEXISTS', KEYS[1], 'message') == 0 then
  if ARGV[7] == '' then return {2} end
  redis.call('HSET', KEYS[1], 'message', ARGV[7])
end
local started = start(KEYS, ARGV)
if started >= 1 then
  redis.call('SADD', KEYS[4], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  return {1, started, redis.call('HGET', KEYS[1], 'tenant') or 'default'}
end
if started == -1 then return {-1, redis.call('GET', KEYS[2]) or '?'} end
return {0, redis.call('HGET', KEYS[1], 'state') or '', redis.call('HGET', KEYS[1], 'cancel') or ''}
