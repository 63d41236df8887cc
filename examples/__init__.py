"""Example deployments and harnesses built on proctor (not part of the installed package)."""
