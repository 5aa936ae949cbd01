"""The dashboard: ``GET /ui``, its JSON/SSE routes (:mod:`app.ui.routes`) and the data they serve
(:mod:`app.ui.data`)."""
