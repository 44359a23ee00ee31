"""Send one status check per URL given on the command line, wait for all, print each status."""

from __future__ import annotations

import sys
import time

from app import page_status

urls = sys.argv[1:] or ["http://127.0.0.1:8000/"]
started = time.monotonic()
handles = page_status.send_many([(url,) for url in urls])
for url, handle in zip(urls, handles, strict=True):
    result = handle.get(timeout_ms=60_000)
    if result.is_ok():
        print(url, result.ok_value)
    else:
        error = result.err_value
        cause = error.data.get("exception_type", "") if isinstance(error.data, dict) else ""
        print(url, error.error_code, cause)
print(f"{len(urls)} pages in {time.monotonic() - started:.2f} s")
