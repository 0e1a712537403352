"""Determinism conformance suite for diffusion image generation."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
#: The source checkout (or editable install) root: holds ``golden/`` and ``fixtures/``.
PROJECT_ROOT = PACKAGE_DIR.parent
