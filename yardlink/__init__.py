"""yardlink: the command root that ties the packages' command groups together."""

__version__ = "0.1.0"
