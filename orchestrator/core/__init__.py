"""The pure core: the inventory model and its rules, versions, quorum, ownership, rendered
text, fact parsing, desired-vs-observed host changes, and the planners. No I/O: no SSH, no
network, no files, no clock waits.

May import: only `orchestrator.core` (and the standard library, tomlkit, cryptography for
parsing). Everything here is tested from data.
"""
