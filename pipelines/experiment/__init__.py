"""The sweep (classes × fractions × arms × seeds), its statistics, tables, plots, report and the paper baseline."""
