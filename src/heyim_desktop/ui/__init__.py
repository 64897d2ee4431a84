"""The Qt desktop app. Qt is imported only here (through :mod:`heyim_desktop.ui.qt`)."""

from __future__ import annotations
