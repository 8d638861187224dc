"""Adapters: everything that talks to the world. SSH transport, etcd's API client, the
release fetcher, local files (state dir, PKI files, snapshots, locks), local tools.

May import: `orchestrator.core` and other adapters. Never the engine or the commands.
"""
