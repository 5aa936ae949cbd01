"""Run one test of the EAS client's own ``test_queue_client.py`` against a scalejob API (in the eas venv).

Usage: ``<eas venv python> run_case.py '{"host", "queue", "token", "case"}'`` (``case`` ``*``: every
test, in one process). Exit status 0 when the case passed. Why not a vendored copy: the file ships in the ``eas-prediction`` 0.36 wheel that
the ``eas_python`` fixture installs anyway (so it is there whenever the client is), and it is
GPL-3.0 while scalejob is Apache-2.0. It is read from the installed package, its SHA-256 checked
against the 0.36 release, and only the four settings at its top are substituted: endpoint, input
queue name, output queue name, token. Upstream:
https://github.com/pai-eas/eas-python-sdk/blob/master/eas_prediction/test_queue_client.py
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pathlib
import sys
import unittest

import eas_prediction

SHA256 = "10830dedcac765df0e46f1c4d9c5bbdcbfc463360720a82fd5038189f27d49a9"  # eas-prediction 0.36
UPSTREAM = {
    "endpoint": "QueueEndpoint = '1828488879222746.cn-shanghai.pai-eas.aliyuncs.com'",
    "queue": "QueueName = 'test_group.qservice'",
    "sink": "SinkQueueName = 'test_group.qservice/sink'",
    "token": "QueueToken = ''",
}


def load(args: dict[str, str]) -> object:
    """The suite module, substituted, imported as ``eas_prediction.<name>`` (it imports ``.queue_client``)."""
    path = pathlib.Path(eas_prediction.__file__).parent / "test_queue_client.py"
    src = path.read_text()
    digest = hashlib.sha256(src.encode()).hexdigest()
    assert digest == SHA256, f"{path} is not the eas-prediction 0.36 test file (sha256 {digest})"
    ours = {"endpoint": f"QueueEndpoint = {args['host']!r}", "queue": f"QueueName = {args['queue']!r}",
            "sink": f"SinkQueueName = {args['queue'] + '/sink'!r}", "token": f"QueueToken = {args['token']!r}"}
    for key, line in UPSTREAM.items():
        assert src.count(line) == 1, f"setting not found once in the suite: {line}"
        src = src.replace(line, ours[key])
    spec = importlib.util.spec_from_loader("eas_prediction.scalejob_suite", loader=None, origin=str(path))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "eas_prediction"
    sys.modules[spec.name] = module
    exec(compile(src, str(path), "exec"), module.__dict__)  # noqa: S102 - the checked upstream file
    return module


def main() -> int:
    args = json.loads(sys.argv[1])
    module = load(args)
    loader = unittest.defaultTestLoader
    case = args["case"]  # "*": the whole file in this one process, in unittest's order
    suite = loader.loadTestsFromTestCase(module.QueueClientTestCase) if case == "*" else loader.loadTestsFromName(f"QueueClientTestCase.{case}", module)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
