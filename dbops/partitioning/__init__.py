"""Time-partitioned tables: convert a live table (migration operations), keep partitions ahead and
detach old ones (``manage.py partitions_maintain``), index a partitioned table without blocking.

Public: ``dbops.partitioning.operations`` (the migration operations); the steps as functions in
``convert`` (``Conversion``, ``copy_create``, ``sync_install``, ``verify_or_raise``), ``copy``
(``history_copy``) and ``swap`` (``swap``, ``kept_drop``); ``maintain`` (``policies``, ``plan``,
``apply``, ``create_ahead``, ``ahead_report``); ``indexes`` (``partitioned_index_build``);
``PartitioningError``.
"""

from dbops.partitioning.ranges import PartitioningError

__all__ = ["PartitioningError"]
