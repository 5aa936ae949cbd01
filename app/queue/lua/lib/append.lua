-- append(stream, counter, cap, data, tags): one message at the next index of an EAS queue.
-- The index comes from the counter and is written as the entry ID's sequence part ('0-<index>'),
-- in one script so that order and index always agree (app/queue/output.py says why). Returns it.
local function append(stream, counter, cap, data, tags)
  local i = redis.call('INCR', counter)
  redis.call('XADD', stream, 'MAXLEN', '~', cap, '0-' .. i, 'data', data, 'tags', tags)
  return i
end
