"""Periodic (beat) jobs' services: index maintenance and cache warming."""
