"""Prefect flows (thin orchestration over the packages) and the `tradeloop` CLI."""
