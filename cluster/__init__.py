"""Scaling out beyond one machine (issue 16): partitions of estates, their owners and leases.

Pure code only, so far: nothing here talks to a broker or a database yet. Imports only
``protocol`` (topics).
"""
