"""Per-tensor mixed precision: measured sensitivity, an exact knapsack, a gate-checked build.

candidates (what each tensor may become, and its size) -> sensitivity (predicted KL of
each choice, measured on calibration text) -> knapsack (the cheapest assignment whose
predicted error meets a target, or the least error within a size) -> search (build it
for real, gate it, correct the target from what the gate measured, build again).
"""
