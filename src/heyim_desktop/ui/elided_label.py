"""A one-line label that cuts its text with "..." to fit, instead of wrapping or widening.

Its height never changes with the text, so a message appearing in it moves no control below.
``text()`` keeps the whole text; the tooltip is the place to show all of it.
"""

from __future__ import annotations

from heyim_desktop.ui.qt import QLabel, QPainter, QPaintEvent, QSize, Qt, QWidget


class ElidedLabel(QLabel):
    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(False)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # Any width will do (the text is cut to fit), so a long text never widens the panel.
        return QSize(0, super().minimumSizeHint().height())

    def shown_text(self) -> str:
        """The text as it fits now ("..." at the end when cut)."""
        return self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, self.contentsRect().width())

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(self.contentsRect(), int(self.alignment()), self.shown_text())
        painter.end()
