"""Scaling out beyond one machine (issue 16): partitions of estates, their owners and leases.

The rules are pure (``partitions``, ``leases``); ``pg`` applies them to PostgreSQL, ``owner``
runs a worker's rounds over it, ``worker`` is that runner on its own. Imports ``protocol``
(topics) and SQLAlchemy only; ``estatewatch.service`` wires it into ``run --role ingest``.
"""
