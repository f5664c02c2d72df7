"""damjobs: the background maintenance jobs of a Digital Asset Management system."""

__version__ = "0.1.0"
