"""dsbs: Distilling step-by-step on JAX/Flax, SeqIO and T5X."""
import setuptools

with open("README.md", encoding="utf-8") as f:
  long_description = f.read()

_CORE = [
    "numpy",
    "jax>=0.4.30",
    "flax>=0.10",
    "optax",
    "orbax-checkpoint",
    "seqio>=0.0.19",
    "tensorflow-datasets",
    "importlib_resources",  # tensorflow-datasets imports it without declaring it
    "gin-config",
    "sentencepiece",
    "safetensors",
    "msgpack",
    "aiohttp",
    "tqdm",
    "filelock",  # JAX's persistent compilation cache needs it to bound its size
    "ml_collections",  # sweep definitions (launch/)
    "matplotlib",  # the report's plots (dsbs.report)
]
# HuggingFace interop (import/export, parity tests). torch is pinned to the CPU wheel that the
# project's machines carry; on GPU hosts install your own torch first, pip keeps it.
_HF = ["torch==2.13.0", "transformers>=4.40"]
_TEST = ["pytest>=7", "pytest-timeout", "hypothesis"] + _HF

setuptools.setup(
    name="dsbs",
    version="0.1.0",
    description="Distilling step-by-step (Hsieh et al., 2023) on JAX/Flax, SeqIO and T5X.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # `tasks/` (SeqIO registrations and per-benchmark definitions) installs as `dsbs.tasks`, so
    # that no top-level package named `tasks` lands in site-packages.
    packages=setuptools.find_packages(include=["dsbs", "dsbs.*"]) + ["dsbs.tasks"],
    package_dir={"dsbs.tasks": "tasks"},
    package_data={"dsbs.tasks": ["prompts/*.json", "prompts/*.txt"]},
    install_requires=_CORE,
    extras_require={
        "hf": _HF,
        "test": _TEST,
        "bench": _HF,
        # T5X is not on PyPI; see README "Running under T5X".
    },
)
