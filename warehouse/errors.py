class WarehouseError(Exception):
    """Base class of warehouse errors."""


class SchemaError(WarehouseError, ValueError):
    """Input to a writer does not fit the table: the message names the table, column and problem."""


class WriteConflictError(WarehouseError):
    """A write still conflicted with other writers after every retry."""


class WarehouseReadError(WarehouseError, RuntimeError):
    """A read from the lake failed (catalog unreachable or locked, unknown snapshot, ...): the
    message names what was read."""


class WarehouseNotFound(WarehouseError):
    """No warehouse where the settings point (``tradeloop init`` creates one)."""
