"""The one table of tolerances the conformance runner applies.

A stage passes when ``max|ours - baseline| <= atol + rtol * max|baseline|``. Float32 runs force full
float32 matmuls on every device (no TF32), so the float32 rows hold on GPUs as on CPUs. The bf16 rows
are wide on purpose: bf16 keeps 8 bits of mantissa, and errors grow through the layers.
"""

# (dtype, stage kind) -> (atol, rtol)
TOLERANCES = {
    ("float32", "features"): (1e-5, 1e-5),   # conv feature encoder output
    ("float32", "hidden"): (1e-5, 1e-5),     # projection + positional conv, each encoder layer
    ("float32", "head"): (1e-5, 1e-5),       # logits, embeddings, projected states
    ("float32", "loss"): (0.0, 1e-5),        # relative, as in the bar
    ("float32", "grad"): (1e-4, 1e-4),       # gradient of the loss w.r.t. the input waveform
    ("bfloat16", "features"): (5e-2, 5e-2),
    ("bfloat16", "hidden"): (1e-1, 5e-2),
    ("bfloat16", "head"): (1e-1, 5e-2),
    ("bfloat16", "loss"): (0.0, 5e-2),
    ("bfloat16", "grad"): (1e-1, 1e-1),
}


def stage_kind(stage: str) -> str:
    """Map a stage name (as the runner records it) to its row in TOLERANCES."""
    if stage == "extract_features":
        return "features"
    if stage.startswith("hidden_states") or stage == "last_hidden_state":
        return "hidden"
    if stage.endswith("loss"):
        return "loss"
    if stage.startswith("grad"):
        return "grad"
    return "head"


# Stages that hang on a hard argmax (the quantizer's codevector choice in inference mode): in bf16 a
# near-tie may pick another codevector, a legitimate difference, so bf16 runs do not compare them.
BF16_UNCOMPARED = {
    "pretraining": ("projected_quantized_states", "codevector_perplexity", "loss", "contrastive_loss",
                    "diversity_loss", "grad.input_values"),
}


def compared(head: str, dtype: str, stage: str) -> bool:
    return not (dtype == "bfloat16" and stage in BF16_UNCOMPARED.get(head, ()))
