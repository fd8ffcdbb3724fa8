"""The shared vocabulary: what an artifact is (`identify`), the format x stack x hardware matrix, hardware profiles.

A leaf package: it depends on nothing in quantship but `errors`, so every stage can use it
and none of them has to ask another stage what a file is.
"""
