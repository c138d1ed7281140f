"""Supervision: the master and its generations, reloads, recycling and stopping, life after
fork in a worker, health checks, listeners, privileges and systemd."""
