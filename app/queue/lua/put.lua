-- A put's checks, input-queue mirror, record and message copy (app/queue/put.py put).
-- KEYS: deleting flag, input-queue stream, its counter, record, request index, then the broker's
-- lists of the service queue (none: no depth check). ARGV: max waiting, mirror cap, payload,
-- mirror tags JSON, record ttl, now, message JSON, request id, then the new record's fields.
-- Returns {index}, {-1, mode} while the service is being deleted, {-2} when the queue is full.
-- include: lib/append.lua
if #KEYS > 5 then
  local n = 0
  for j = 6, #KEYS do n = n + redis.call('LLEN', KEYS[j]) end
  if n >= tonumber(ARGV[1]) then return {-2} end
end
local deleting = redis.call('GET', KEYS[1])
if deleting then return {-1, deleting} end
local i = append(KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[4], 'index', i, 'message', ARGV[7], unpack(ARGV, 9))
redis.call('EXPIRE', KEYS[4], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[8])
return {i}
