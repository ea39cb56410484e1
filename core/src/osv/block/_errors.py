"""Exceptions raised by disks, partitions and the container formats behind them."""


class BlockError(Exception):
    """A disk or partition cannot be opened, read or written as asked."""


class Qcow2Error(BlockError):
    """A qcow2 file is malformed, or uses a feature this reader does not have."""
