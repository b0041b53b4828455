"""Make the flat top-level modules importable from tests/ whatever the working directory."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
