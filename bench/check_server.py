"""A stand-in server for the correctness check before timing: writes the [bench] table of the
config it was given (`-c PATH` or PATH) as JSON to $BENCH_CHECK_OUT."""

from __future__ import annotations

import json
import os
import sys
import tomllib


def main(argv: list[str]) -> None:
    path = argv[argv.index("-c") + 1] if "-c" in argv else argv[0]
    with open(path, "rb") as file:
        table = tomllib.load(file).get("bench", {})
    with open(os.environ["BENCH_CHECK_OUT"], "w", encoding="utf-8") as out:
        json.dump(table, out)


if __name__ == "__main__":
    main(sys.argv[1:])
