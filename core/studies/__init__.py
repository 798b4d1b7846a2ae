"""Studies: named ablations (lr sweeps, size ladders) and their reports.
"""
