"""Example adapters shipped with snakepit_bridge.

* :class:`snakepit_bridge.examples.showcase.ShowcaseAdapter`: one tool per
  behaviour the host must handle (results of every kind, errors, crashes,
  hangs, cancellation, streaming, sessions, host callbacks, grandchildren).
  The Go test suites run against it.
* :class:`snakepit_bridge.examples.textstats.TextStatsAdapter`: the pattern
  for real adapters: an expensive resource loaded once per worker in
  ``setup()`` and reused by every call.

Submodules are not imported here, so naming one adapter on the command line
loads only that one.
"""
