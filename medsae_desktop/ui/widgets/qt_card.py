"""The titled "card" frame used to group panels in the Viewer and Features tabs."""

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget


def make_card(title: str, body: QWidget, extra: QWidget | None = None,
              title_style: str | None = None) -> QFrame:
    """Frame ``body`` under a title row (``extra`` sits at the row's right end).

    Parameters
    ----------
    title
        Heading text.
    body
        The card's content; it takes all the spare height.
    extra
        Optional widget shown right-aligned in the title row.
    title_style
        Inline style sheet for the title; None uses the theme's ``sectionTitle`` style.
    """
    f = QFrame()
    f.setObjectName("card")
    lay = QVBoxLayout(f)
    lay.setContentsMargins(8, 6, 8, 8)
    head = QHBoxLayout()
    t = QLabel(title)
    if title_style is None:
        t.setObjectName("sectionTitle")
    else:
        t.setStyleSheet(title_style)
    head.addWidget(t)
    head.addStretch(1)
    if extra is not None:
        head.addWidget(extra)
    lay.addLayout(head)
    lay.addWidget(body, 1)
    return f
