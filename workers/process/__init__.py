"""The processes a worker runs beside its tasks: the spawn server and reaper, supervised user apps, the progress endpoint."""
