-- One request event (app/queue/output.py emit). KEYS and ARGV: lib/emit.lua's k and a.
-- include: lib/emit.lua
return emit(KEYS, ARGV)
