"""The host side: everything that runs on a hypervisor host's agent (see labs/README.md).

The web side never imports this package; it sends work through labs.task_calls.
"""
