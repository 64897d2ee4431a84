"""Whether a system-wide Quick Generate shortcut is possible here, and why not.

Qt has no global hotkey API. Each platform needs its own mechanism, none of which HeyIm ships:
macOS needs Carbon's ``RegisterEventHotKey`` (through pyobjc, not a dependency), Windows needs
``RegisterHotKey`` (pywin32), X11 a key grab (python-xlib or pynput), and Wayland allows only the
compositor to grab keys (the xdg-desktop-portal GlobalShortcuts interface, which Qt does not wrap).
So HeyIm offers the in-app shortcut below and says plainly in Preferences why there is no
system-wide one, rather than pretending.
"""

from __future__ import annotations

import os
import sys

#: What the platform calls the place where the app's icon lives.
TRAY_NAME = "menu bar" if sys.platform == "darwin" else "system tray"
#: The in-app shortcut (Cmd+Shift+G on macOS: Qt maps Ctrl to Cmd there).
IN_APP_SHORTCUT = "Ctrl+Shift+G"


def system_wide_unavailable_reason(platform: str | None = None, qpa: str | None = None) -> str:
    """Why a system-wide shortcut is not available on this platform (one sentence)."""
    platform = platform or sys.platform
    qpa = (qpa if qpa is not None else os.environ.get("QT_QPA_PLATFORM", "")).lower()
    if qpa in ("offscreen", "minimal"):
        return "there is no display server here (Qt runs offscreen), so no key can be grabbed."
    if platform == "darwin":
        return ("macOS needs the Carbon hotkey API through pyobjc, which HeyIm does not ship. "
                "You can assign a key to HeyIm in System Settings > Keyboard > Keyboard Shortcuts.")
    if platform.startswith("win"):
        return "Windows needs the RegisterHotKey API through pywin32, which HeyIm does not ship."
    if os.environ.get("WAYLAND_DISPLAY") or qpa.startswith("wayland"):
        return ("on Wayland only the desktop may grab keys; bind a key to "
                "`heyim-desktop` in your desktop's keyboard settings instead.")
    return "X11 needs a key grab through python-xlib or pynput, which HeyIm does not ship."


def shortcut_note() -> str:
    """The line Preferences shows under the shortcut."""
    shortcut = IN_APP_SHORTCUT.replace("Ctrl", "Cmd") if sys.platform == "darwin" else IN_APP_SHORTCUT
    return (f"Quick Generate: {shortcut} while HeyIm is active, or the tray icon's menu. "
            f"A system-wide shortcut is not available: {system_wide_unavailable_reason()}")
