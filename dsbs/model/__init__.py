"""The T5 student: config, Flax layers and network (T5X-compatible), partitioning, checkpoints."""
from dsbs.model.config import CONFIGS, T5Config, get_config
from dsbs.model.network import Transformer, init_params
from dsbs.model.partitioning import logical_axis_rules, make_mesh, param_shardings

__all__ = ["CONFIGS", "T5Config", "get_config", "Transformer", "init_params",
           "logical_axis_rules", "make_mesh", "param_shardings"]
