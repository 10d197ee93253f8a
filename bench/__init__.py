"""Benchmarks run by ``make bench``: figures and ratios printed, never asserted."""
