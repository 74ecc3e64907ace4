"""physnn's benchmarks: one suite (``python -m benchmarks``, see ``benchmarks.suite``) and
standalone scripts (``python benchmarks/throughput.py`` and the others).

Kept free of imports so that ``python -m benchmarks.NAME`` loads only the module it runs.
"""
