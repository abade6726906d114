"""Print docs/ACCESS.md: who may call every operation of the API, and the rule reaching its records.

    python scripts/access_matrix.py > docs/ACCESS.md

Made from the declarations on the views (app/access/matrix.py); tests/test_access_walk.py fails when
docs/ACCESS.md differs from what this prints.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    # The testing settings need no server and write nothing: building the route table is all we do.
    from app import create_app
    from app.access.matrix import render

    sys.stdout.write(render(create_app("testing")))


if __name__ == "__main__":
    main()
