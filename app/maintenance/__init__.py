"""Periodic (beat) jobs' services: index maintenance, cache warming and clean-up, and their locks."""
