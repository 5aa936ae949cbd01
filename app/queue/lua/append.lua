-- One message on an EAS queue (app/queue/streams.py StreamQueue.append).
-- KEYS[1] stream, KEYS[2] its counter; ARGV[1] cap, ARGV[2] data, ARGV[3] tags JSON. Returns the index.
-- include: lib/append.lua
return append(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
