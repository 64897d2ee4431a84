"""The engine in its own process: a crash, an out-of-memory kill or a hung model costs one job.

The parent (the window, ``serve``, ``worker``) never imports torch. It starts
``python -m heyim_desktop.core.process`` (the frozen app: its own binary with the hidden
``engine-process`` argument) and talks to it over the child's stdin and stdout in framed
messages: a JSON header plus raw byte blobs (:mod:`.protocol`). Requests travel as the
codec's plain data; result pixels come back through a shared-memory block the parent owns.
Nothing is ever unpickled.

:class:`~.remote.ProcessLoader` is an :data:`~heyim_desktop.core.host.EngineLoader`: it
starts a fresh child per model and hands the :class:`~.remote.RemoteEngine` stand-in to
:class:`~heyim_desktop.core.host.EngineHost`, so the host and the workers keep one code path.
"""
