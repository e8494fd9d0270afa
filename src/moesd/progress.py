"""Progress bars with ETA for long commands (tqdm), on stderr, quiet when stderr is not a terminal or with
--quiet, so logs and pipes get only the lines the commands print themselves."""

from __future__ import annotations

import sys


def progress(total: int | None = None, desc: str = "", unit: str = "it", quiet: bool = False, iterable=None):
    from tqdm import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, dynamic_ncols=True,
                leave=False)


def quiet_flag(p) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is also off when stderr is not a terminal)")
