"""The recipes of the shipped judges, end to end: the default question reader (:mod:`.reader`)
and the pairwise LoRA judge (:mod:`.pairwise`). They span stages (data, labels, training, export,
eval) that no stage may import, so they sit in a package of their own.
"""
