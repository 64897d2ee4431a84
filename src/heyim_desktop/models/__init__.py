"""The model library: finding, checking, importing and downloading models. No Qt.

Front ends use ``ModelLibrary(extra_folders).list()`` for what exists, ``importer.import_model``
to bring files in, ``catalogue.catalogue()`` + ``download.plan_download`` / ``Downloader`` to
fetch recommended models, and ``verify.verify_model`` to check one. Modules load lazily: importing
this package imports no torch and no huggingface_hub.
"""

from __future__ import annotations
