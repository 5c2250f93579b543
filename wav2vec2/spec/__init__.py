"""The framework-free part of the model: lengths, masks, negatives, CTC, weight names. NumPy only."""
