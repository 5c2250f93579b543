"""Cross-backend conformance: the same weights, inputs and spec-layer masks through every installed
backend (and the reference implementation when it is installed), compared stage by stage."""
