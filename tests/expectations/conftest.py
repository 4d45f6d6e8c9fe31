"""The quality gate's tests build their batches with tests.support.batches."""
