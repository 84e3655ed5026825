"""The optimisation: VGG, weights, losses, L-BFGS, stylizer, tiling, flow and the temporal chain.

TensorFlow lives here; nothing here touches paths, rich, Ray or the layers above.
"""
