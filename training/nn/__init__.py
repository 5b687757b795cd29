"""Networks (BasicUNet with the HU window baked in, ensembles), supervised losses
(Dice, continuous Dice, cross-entropy) and the tensor form of the core resize.
"""
