"""Time-partitioned tables: convert a live table (migration operations), keep partitions ahead and
detach old ones (``manage.py partitions_maintain``), index a partitioned table without blocking.

Public: ``dbops.partitioning.operations`` (the migration operations), ``maintain`` (``plan``,
``apply``, ``create_ahead``, ``ahead_report``, ``policies``), ``convert`` (the steps as functions,
``Conversion``), ``copy`` (``history_copy``), ``PartitioningError``.
"""

from dbops.partitioning.ranges import PartitioningError

__all__ = ["PartitioningError"]
