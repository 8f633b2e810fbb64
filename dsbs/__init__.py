"""dsbs: Distilling step-by-step on JAX/Flax, SeqIO and T5X."""

__version__ = "0.1.0"
