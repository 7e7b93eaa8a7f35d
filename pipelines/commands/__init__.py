"""CLI subcommands: each module parses its options and calls the library."""
