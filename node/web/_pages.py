"""Every page of the web app, with its path and methods: one module per page."""

from __future__ import annotations

from . import _analytics, _home, _market, _nodepage, _publish, _run, _streams, _tasks, _wallet

PAGES = (
    *_home.PAGES,
    *_market.PAGES,
    *_publish.PAGES,
    *_run.PAGES,
    *_tasks.PAGES,
    *_wallet.PAGES,
    *_analytics.PAGES,
    *_nodepage.PAGES,
    *_streams.PAGES,
)
