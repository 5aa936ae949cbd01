"""Flower configuration for scalejob (``scalejob flower`` passes ``--conf`` pointing here).

Flower executes this file (tornado ``parse_config_file``): module-level names are options.
``format_task`` makes scalejob's tasks readable in the task list and detail pages: the task's
service and a short payload instead of a raw kwargs dict with a (possibly base64) body.
"""

import ast

# result: the scalejob outcome (succeeded/failed/cancelled)
tasks_columns = "name,uuid,state,kwargs,result,received,runtime,worker"
natural_time = False
purge_offline_workers = 300

_PAYLOAD_CHARS = 80


def _short(text, limit=_PAYLOAD_CHARS):
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_task(task):
    """``scalejob.command`` -> ``command · <service>`` with kwargs ``payload='...'`` shortened."""
    name = getattr(task, "name", None) or ""
    if not name.startswith("scalejob."):
        return task
    try:
        kwargs = ast.literal_eval(task.kwargs) if isinstance(task.kwargs, str) else dict(task.kwargs or {})
    except (ValueError, SyntaxError):
        return task
    service = kwargs.get("service", "?")
    task.name = f"{name.split('.', 1)[1]} · {service}"
    if kwargs.get("payload_b64"):
        shown = f"<{len(kwargs['payload_b64']) * 3 // 4} bytes>"
    else:
        shown = _short(kwargs.get("payload") or "")
    task.kwargs = f"service={service} payload={shown!r}"
    return task


def _metrics_behind_login():
    """Flower serves ``/metrics`` (worker names, task names and counts) without its login; put it behind it.

    This file runs inside Flower's process (tornado ``parse_config_file``), before Flower builds its
    routes, so the handler is wrapped here: the same basic-auth check the pages use, then Flower's own.
    """
    try:
        from flower.views import monitor  # noqa: PLC0415 - this file's module-level names are read as Flower options
    except ImportError:  # pragma: no cover - only ever read by Flower
        return
    original = monitor.Metrics.get

    async def get(self):
        options = self.application.options
        # get_current_user raises 401 for a missing or wrong basic-auth header
        if (options.basic_auth or options.auth) and not self.get_current_user():
            self.set_status(401)
            return
        await original(self)

    monitor.Metrics.get = get


_metrics_behind_login()
