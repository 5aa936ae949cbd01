"""The processes a worker runs beside its tasks: spawn server and reaper, supervised user apps, progress endpoint."""
