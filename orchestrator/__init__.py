"""orchestratord: runs work queues of AI-agent coding tasks in parallel tracks."""

__version__ = "0.1.0"
