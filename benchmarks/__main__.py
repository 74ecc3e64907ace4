"""``python -m benchmarks``: run the benchmark suite (``benchmarks.suite``) from the repository root."""

from benchmarks.suite import main

raise SystemExit(main())
