"""The ``scalejob`` command line and what only it starts: the local stack, Flower, front ends, the demo.

The one layer that may import :mod:`workers` and :mod:`autoscale`: it starts them.
"""
