"""``python -m dartool`` = the ``dartool`` command (useful where the package is not pip-installed)."""
from .cli import app

app()
