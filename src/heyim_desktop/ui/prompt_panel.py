"""Prompt and negative prompt, a token counter, and recent prompts to pick again."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Callable

from heyim_desktop.core.errors import UserFacingError
from heyim_desktop.ui.qt import (
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QSizePolicy,
    Qt,
    QTimer,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)

if TYPE_CHECKING:
    from heyim_desktop.core.capabilities import Capabilities
    from heyim_desktop.core.conditioning import TokenCount
    from heyim_desktop.store.styles import StyleBook

log = logging.getLogger(__name__)

#: CLIP's context is 77 tokens, two of which are the start and end markers.
TOKEN_LIMIT = 77


def _html(text: str) -> str:
    import html

    return html.escape(text).replace("\n", "<br>")
_WORDISH = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")

#: Counts a prompt the way the loaded model will read it (``Engine.count_tokens``).
CountFn = Callable[[str], "TokenCount | None"]


def estimate_tokens(text: str) -> int:
    """A rough CLIP token count without the tokenizer: words, digits and punctuation, long words twice."""
    count = 0
    for piece in _WORDISH.findall(text):
        count += 1 + (len(piece) - 1) // 8 if piece.isalpha() else 1
    return count


def count_prompt(text: str, counter: CountFn | None) -> "TokenCount":
    """The engine's count of ``text`` or, with no model loaded (or a counter that fails), an estimate."""
    from heyim_desktop.core.conditioning import TokenCount

    if counter is not None:
        try:
            exact = counter(text)
            if exact is not None:  # None: the engine process did not answer in time (busy)
                return exact
        except Exception:  # noqa: BLE001 - a closed engine or a tokenizer quirk must not break typing
            log.debug("token counter failed; estimating", exc_info=True)
    n = estimate_tokens(text) if text.strip() else 0
    limit = TOKEN_LIMIT - 2
    return TokenCount(n, limit, cut_at=limit if n > limit else None, exact=False)


class PromptEdit(QPlainTextEdit):
    """A plain-text box that sizes to a few lines; Ctrl/Cmd+Enter is the window's shortcut."""

    def __init__(self, placeholder: str, lines: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText(placeholder)
        self.setTabChangesFocus(True)
        height = self.fontMetrics().lineSpacing() * lines + 12
        self.setMinimumHeight(height)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)


class TokenCounter(QLabel):
    """``83/150 (75|8)`` where the model reads chunks, ``N/77`` where it reads one window.

    Each chunk's size shows between the bars, and the tooltip names the words each chunk
    starts with; past the model's limit the count turns bold and says "cut", and the
    tooltip quotes what is left out.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.count: TokenCount | None = None

    def show_count(self, count: "TokenCount", *, max_chunks: int = 1) -> None:
        self.count = count
        approx = "" if count.exact else "~"
        how = "counted with the model's tokenizer" if count.exact else "an estimate: no model is loaded yet"
        cut = count.cut_at is not None
        if max_chunks > 1:
            text = f"{approx}{count.tokens}/{count.limit}"
            if count.chunks > 1:
                text += " (" + "|".join(str(n) for n in count.chunk_tokens) + ")"
            tip = (
                f"{count.tokens} tokens in {count.chunks} chunk{'s' if count.chunks != 1 else ''} of 75 ({how}). "
                f"This model reads up to {max_chunks} chunks ({max_chunks * 75} tokens); a full chunk "
                "breaks at the last comma within 20 tokens, and BREAK starts a new one."
            )
            for i, start in enumerate(count.chunk_starts, start=2):
                tip += f"\nChunk {i} starts at: {start}"
        else:
            window = count.window
            text = f"{approx}{count.tokens + 2 if count.tokens else 0}/{window}"
            tip = f"{count.tokens + 2 if count.tokens else 0} of {window} tokens, start and end included ({how})."
        if cut:
            text += "  cut"
            limit = count.cut_at if max_chunks > 1 else count.window
            tip += f"\nText past {limit} tokens is cut off"
            tip += f": {count.cut_text}" if count.cut_text else "."
        self.setText(text)
        self.setToolTip(tip)
        self.setProperty("over", cut)
        # Bold instead of a fixed colour keeps the warning readable in light and dark themes.
        font = self.font()
        font.setBold(cut)
        self.setFont(font)


class PromptPanel(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None, styles: "StyleBook | None" = None) -> None:
        super().__init__(parent)
        from heyim_desktop.ui.style_picker import StylePicker

        #: The loaded model's counter (``Engine.count_tokens``) and how many chunks it reads.
        self.counter: CountFn | None = None
        self._recounts = 0  # re-counts while the engine process is too busy to answer
        self.max_chunks = 1
        self.recent_source: Callable[[], list[str]] = lambda: []

        self.prompt = PromptEdit("Describe the image: a red fox in the snow, golden hour", 3)
        self.prompt.setAccessibleName("Prompt")
        self.negative = PromptEdit("What to avoid (optional): blurry, text", 1)
        self.negative.setAccessibleName("Negative prompt")
        self.prompt_tokens = TokenCounter()
        self.negative_tokens = TokenCounter()

        self.recent_button = QToolButton()
        self.recent_button.setText("Recent \u25be")
        # The style's own menu arrow is drawn over the text on some styles (Fusion): the text has one.
        self.recent_button.setStyleSheet("QToolButton::menu-indicator { image: none; width: 0px; }")
        self.recent_button.setToolTip("Pick a prompt you used before")
        self.recent_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_menu = QMenu(self.recent_button)
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self.recent_button.setMenu(self.recent_menu)

        head = QHBoxLayout()
        head.addWidget(QLabel("<b>Prompt</b>"))
        head.addStretch(1)
        head.addWidget(self.prompt_tokens)
        self.style_picker = StylePicker(styles)
        self.style_picker.prompt_source = lambda: (self.prompt_text(), self.negative_text())
        head.addWidget(self.style_picker)
        head.addWidget(self.recent_button)
        neg_head = QHBoxLayout()
        neg_head.addWidget(QLabel("Negative prompt"))
        neg_head.addStretch(1)
        neg_head.addWidget(self.negative_tokens)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.prompt, 3)
        # Capped, so the input image below keeps room; longer prompts scroll inside the box.
        self.prompt.setMaximumHeight(self.prompt.fontMetrics().lineSpacing() * 5 + 12)
        self.negative.setMaximumHeight(self.negative.fontMetrics().lineSpacing() * 2 + 12)
        layout.addLayout(neg_head)
        layout.addWidget(self.negative, 1)
        #: What the model will get once the chosen styles are applied (shown only with styles).
        self.final_preview = QLabel()
        self.final_preview.setWordWrap(True)
        self.final_preview.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.final_preview.setAccessibleName("Final prompt")
        layout.addWidget(self.final_preview)

        # Counting on every keystroke is cheap, but debounce so a paste of a page stays smooth.
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(120)
        self._count_timer.timeout.connect(self.update_counts)
        self.prompt.textChanged.connect(self._text_changed)
        self.negative.textChanged.connect(self._text_changed)
        self.style_picker.changed.connect(self._styles_changed)
        self.update_counts()

    def _text_changed(self) -> None:
        self._count_timer.start()
        self.changed.emit()

    def _styles_changed(self) -> None:
        self.update_counts()
        self.changed.emit()

    def set_counter(self, counter: CountFn | None, capabilities: "Capabilities | None" = None) -> None:
        """Count with the loaded model (its engine's ``count_tokens``), or estimate (None)."""
        self.counter = counter
        self._recounts = 0
        self.max_chunks = capabilities.max_prompt_chunks if capabilities is not None else 1
        self.update_counts()

    def update_counts(self) -> None:
        prompt, negative = self.prompt.toPlainText(), self.negative.toPlainText()
        if self.style_picker.selected():
            try:
                prompt, negative = self.style_picker.expand(prompt.strip(), negative.strip())
                self.final_preview.setText(f"<b>Final prompt:</b> {_html(prompt)}"
                                           + (f"<br><b>Negative:</b> {_html(negative)}" if negative else ""))
            except UserFacingError as exc:
                self.final_preview.setText(_html(str(exc)))
            self.final_preview.show()
        else:
            self.final_preview.hide()
        # The counts are of what the model gets: the prompts with their styles.
        counts = count_prompt(prompt, self.counter), count_prompt(negative, self.counter)
        self.prompt_tokens.show_count(counts[0], max_chunks=self.max_chunks)
        self.negative_tokens.show_count(counts[1], max_chunks=self.max_chunks)
        # A busy engine process answers late: count again shortly (a few times, not forever).
        if self.counter is not None and not all(c.exact for c in counts) and self._recounts < 50:
            self._recounts += 1
            self._count_timer.start()
        elif all(c.exact for c in counts):
            self._recounts = 0

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        prompts = self.recent_source()
        if not prompts:
            action = self.recent_menu.addAction("No prompts yet")
            action.setEnabled(False)
            return
        for text in prompts:
            label = text if len(text) <= 80 else text[:77] + "..."
            action = self.recent_menu.addAction(label.replace("&", "&&").replace("\n", " "))
            action.setToolTip(text)
            action.triggered.connect(lambda _checked=False, t=text: self.set_prompt(t))

    # -- values ---------------------------------------------------------------------------
    def prompt_text(self) -> str:
        return self.prompt.toPlainText().strip()

    def negative_text(self) -> str:
        return self.negative.toPlainText().strip()

    def final_prompts(self) -> tuple[str, str, tuple[str, ...]]:
        """(prompt, negative prompt, style names): the prompts with the chosen styles applied."""
        names = tuple(self.style_picker.selected())
        prompt, negative = self.style_picker.expand(self.prompt_text(), self.negative_text())
        return prompt, negative, names

    def set_prompt(self, prompt: str, negative: str | None = None) -> None:
        self.prompt.setPlainText(prompt)
        if negative is not None:
            self.negative.setPlainText(negative)
        self.update_counts()
