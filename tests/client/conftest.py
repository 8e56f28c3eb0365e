"""crm_client from this checkout's clients/python, installed or not: put first on the path, so
that the tests exercise this checkout's package even where an editable install points at
another one (a worktree sharing a virtualenv) or none is installed yet."""

import sys
from pathlib import Path

CLIENT_DIR = str(Path(__file__).resolve().parents[2] / "clients" / "python")

if CLIENT_DIR not in sys.path:
    sys.path.insert(0, CLIENT_DIR)
