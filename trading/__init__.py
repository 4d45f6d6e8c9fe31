"""Trading core: the ONE decision -> risk -> broker -> portfolio code path.

The backtest engines (``trading.backtest``) and the live trading loop call the same functions
in ``decision``, ``risk``, ``broker``, ``portfolio`` and ``step``. Nothing here imports torch or
Prefect.
"""
