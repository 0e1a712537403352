"""Determinism conformance suite for diffusion image generation."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
_INSTALLED_DATA = PACKAGE_DIR / "_data"
#: The folder that holds ``golden/`` and ``fixtures/``: the source checkout's root (a clone,
#: or an editable install), or, in an installed wheel, the package's ``_data/`` folder where
#: the wheel carries both (pyproject.toml maps them there).
PROJECT_ROOT = (_INSTALLED_DATA if (_INSTALLED_DATA / "fixtures").is_dir()
                else PACKAGE_DIR.parent)
