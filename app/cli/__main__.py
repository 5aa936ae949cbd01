"""``python -m app.cli``: how the autoscaler and ``scalejob up`` start workers and the API."""

from app.cli.main import main

main()
