"""A path field with a "Choose…" button (settings dialog, Evaluation tab)."""

from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QWidget


def path_row(edit: QLineEdit, *, caption: str = "Choose folder",
             file_filter: str | None = None) -> QWidget:
    """``edit`` followed by a "Choose…" button that fills it.

    Parameters
    ----------
    edit
        The field that holds the path (the caller keeps it to read the value).
    caption
        Title of the file dialog.
    file_filter
        Pick a file matching this Qt filter (e.g. ``"HDF5 cache (*.h5 *.hdf5)"``); None picks
        a folder.
    """
    def choose() -> None:
        if file_filter is None:
            path = QFileDialog.getExistingDirectory(edit.window(), caption, edit.text())
        else:
            path, _ = QFileDialog.getOpenFileName(edit.window(), caption, edit.text(),
                                                  file_filter)
        if path:
            edit.setText(path)

    w = QWidget()
    row = QHBoxLayout(w)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    b = QPushButton("Choose…")
    b.clicked.connect(choose)
    row.addWidget(b)
    return w
