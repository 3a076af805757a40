"""A FUSE filesystem that loses what was not fsynced when told to "cut the power"."""
