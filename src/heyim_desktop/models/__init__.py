"""The model library: finding, checking, importing and downloading models. No Qt."""

from __future__ import annotations
