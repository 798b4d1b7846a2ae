"""Analysis: statistics and significance, seed-band plots, inspection of trained models and HTML
reports. Reads runs; never starts one.
"""
