"""Writes ``api/static/statuses.js``, the job statuses the pages' JS names,
from the one enum (``runstream.db.status``): the pages have no build step, so
the file is committed, and a unit test fails when it differs from what this
writes now.

    python -m runstream.api.static_gen
"""

from __future__ import annotations

import json
from pathlib import Path

from runstream.db.status import TERMINAL_STATUSES, Status

STATUSES_JS = Path(__file__).parent / "static" / "statuses.js"
COMMAND = "python -m runstream.api.static_gen"


def statuses_js() -> str:
    by_name = "".join(f"  {status.name}: {json.dumps(status.value)},\n" for status in Status)
    terminal = ", ".join(json.dumps(status.value) for status in Status if status in TERMINAL_STATUSES)
    return (
        "// Job statuses, from runstream.db.status.Status: written by\n"
        f"// `{COMMAND}`. Change the enum and run it; never edit this file.\n"
        '"use strict";\n'
        "\n"
        '// Every status, by name: JOB_STATUS.COMPLETED is "completed".\n'
        f"const JOB_STATUS = Object.freeze({{\n{by_name}}});\n"
        "// The statuses a job ends in: nothing follows them.\n"
        f"const TERMINAL_STATUSES = Object.freeze([{terminal}]);\n"
    )


def main() -> None:
    STATUSES_JS.write_text(statuses_js())
    print(f"wrote {STATUSES_JS}")


if __name__ == "__main__":
    main()
