"""Data quality: Great Expectations suites and the gate every batch passes before it is merged.

``expectations.gate.gate_and_merge`` is the entry point. Importing this package does not
import Great Expectations (its import costs seconds); the GX engine is loaded on the first
validation and its context is built once per process (``expectations.engine``).
"""
