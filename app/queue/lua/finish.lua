-- Move a request record to a terminal state once (app/queue/records.py finish).
-- KEYS[1] record; ARGV[1] state, ARGV[2] record ttl, then the fields to write. Returns 1 if it moved.
-- include: lib/finish.lua
return finish(KEYS[1], ARGV[1], ARGV[2], {unpack(ARGV, 3)})
