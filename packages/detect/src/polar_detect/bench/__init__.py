"""Detector benchmarks (``make bench``); not imported by the product."""
