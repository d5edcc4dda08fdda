"""A dataset build worker: a fresh interpreter that draws cache rows on request.

Started by `tune.data._build.fill_rows` as `python -c "...; from tune.data._worker import main;
main()"`, it imports only numpy and the generator module, never the caller's `__main__`. Its
standard input and output carry pickled messages (`multiprocessing.connection.Connection`):

    parent -> worker   (module, func, args, path)      once, first
    parent -> worker   (start, stop)                   one task; end of input: no more tasks
    worker -> parent   ("ok", rows) | ("error", text)  after each task

The rows go straight into the .npy at `path` through the worker's own memory map, so no pixels
cross the pipe. Anything the generator prints goes to standard error.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from multiprocessing.connection import Connection


def main() -> None:
    tasks = Connection(os.dup(0), writable=False)
    replies = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints must not corrupt the reply stream
    sys.stdout = sys.stderr
    import numpy as np

    module, func, args, path = tasks.recv()
    fn = getattr(importlib.import_module(module), func)
    arr = np.load(path, mmap_mode="r+")
    while True:
        try:
            start, stop = tasks.recv()
        except EOFError:
            break
        try:
            arr[start:stop] = fn(start, stop, *args)
            arr.flush()
        except BaseException:  # reported to the parent, which stops the build
            replies.send(("error", traceback.format_exc()))
            break
        replies.send(("ok", stop - start))
    del arr


if __name__ == "__main__":
    main()
