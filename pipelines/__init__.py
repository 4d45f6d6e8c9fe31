"""Market data pipelines: sources (ccxt, the simulated exchange, files), resampling, collection.

Nothing here imports Prefect: the flows in ``flows/`` call these plain functions.
"""
