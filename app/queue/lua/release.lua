-- Drop a worker's lease on a request (app/queue/records.py release).
-- KEYS[1] lease, KEYS[2] running hash; ARGV[1] request id, ARGV[2] worker.
-- include: lib/release.lua
return release(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
