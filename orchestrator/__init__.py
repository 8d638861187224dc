"""etcd-deploy: agentless deployment and day-2 operations for etcd clusters."""

__version__ = "0.1.0"
