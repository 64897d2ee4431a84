"""The one door Qt enters through: every ui module imports Qt names from here.

One place checks the version and one place changes if the binding ever does (Anki's
``aqt.qt`` and qutebrowser's ``qutebrowser.qt`` follow the same rule).
"""

from __future__ import annotations

import sys

import PySide6
from PySide6.QtCore import (
    QAbstractListModel,
    QByteArray,
    QEvent,
    QEventLoop,
    QItemSelectionModel,
    QMimeData,
    QModelIndex,
    QObject,
    QPoint,
    QPointF,
    QRect,
    QRunnable,
    QSettings,
    QSize,
    QStandardPaths,
    Qt,
    QThread,
    QThreadPool,
    QTimer,
    QUrl,
    Signal,
    Slot,
)
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QColor,
    QDesktopServices,
    QDrag,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QFileOpenEvent,
    QGuiApplication,
    QIcon,
    QImage,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPalette,
    QPixmap,
    QShortcut,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QStatusBar,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QSystemTrayIcon,
    QTabWidget,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

MIN_QT = (6, 6)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


if _version_tuple(PySide6.__version__) < MIN_QT:  # pragma: no cover - depends on the install
    raise ImportError(
        f"HeyIm Desktop needs PySide6 {'.'.join(map(str, MIN_QT))} or newer, found {PySide6.__version__}"
    )

QT_VERSION = PySide6.__version__

# PySide6 6.12.0 drops a reference to True on every Signal.emit(); before Python 3.12 (where
# True became immortal) the interpreter aborts after a few thousand signals ("bool_dealloc").
if PySide6.__version__ == "6.12.0" and sys.version_info < (3, 12):  # pragma: no cover - depends on the install
    raise ImportError("PySide6 6.12.0 crashes on this Python (a reference-count bug in Signal.emit); "
                      "install PySide6-Essentials 6.11.3 (see constraints.txt) or use Python 3.12+")

__all__ = [name for name in dir() if name[0].isupper() and not name.startswith("MIN")] + ["Signal", "Slot", "QT_VERSION"]
