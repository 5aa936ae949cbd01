-- stale(record, counter, epoch): true (and the refusal counted) when ``epoch`` is not the
-- record's current one: a delivery whose lease expired and whose request started again elsewhere
-- (a partition healed) must not write its outcome, progress or log lines over the new attempt's.
local function stale(record, counter, epoch)
  if epoch == '' or redis.call('HGET', record, 'attempts') == epoch then return false end
  redis.call('INCR', counter)
  return true
end
