"""The T5 student: config, Flax network (T5X-compatible), partitioning, checkpoints."""
from dsbs.model.config import CONFIGS, T5Config, get_config
from dsbs.model.partitioning import logical_axis_rules, make_mesh, param_shardings
from dsbs.model.t5 import Transformer, init_params, shift_right

__all__ = ["CONFIGS", "T5Config", "get_config", "Transformer", "init_params", "shift_right",
           "logical_axis_rules", "make_mesh", "param_shardings"]
