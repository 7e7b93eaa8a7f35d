"""A classifier run on disk (train, select on val, test once) and its figures."""
