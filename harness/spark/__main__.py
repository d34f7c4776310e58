"""``python -m harness.spark``: print the directory of the Spark jars, fetching them once."""

from __future__ import annotations

import sys

from ..engines import ensure_spark_jars, spark_libs_dir, spark_version
from ..errors import HarnessError


def main() -> int:
    if not spark_libs_dir().is_dir():
        print(f"fetching the Spark {spark_version()} jars with Maven (once) ...", file=sys.stderr)
    try:
        print(ensure_spark_jars())
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
