"""`quantship validate`: measure each variant against the baseline and decide if it may ship.

Every check yields a measured number, a threshold and a verdict; a check that could
not be measured is a failure, never a pass (see gate.py).
"""
