"""Sharing: export to transformers, the Hub (experiments as datasets, models as model repos).
"""
