"""Layer 6: training machinery (trainer, seeds, checkpoints, resume, logs) and the per-method training tasks."""

from clipiq.core.registry import Registry
from clipiq.train.engine import MetricsLog, Trainer, read_metrics, seed_everything, step_rng

# Each task is a module with DEFAULTS (the config it accepts) and run(cfg, run_dir, device, resume, progress);
# entries are lazy, so listing the tasks imports none of them.
TRAINING_TASKS: Registry = Registry("training task")
TRAINING_TASKS.register_lazy("degradation-clip", "clipiq.train.degradation_clip")
TRAINING_TASKS.register_lazy("degradation-clip-v2", "clipiq.train.degradation_clip_v2")
TRAINING_TASKS.register_lazy("clip-dqa", "clipiq.train.clip_dqa")
TRAINING_TASKS.register_lazy("clipiqa-plus", "clipiq.train.clipiqa_plus")
TRAINING_TASKS.register_lazy("grmp-pretrain", "clipiq.train.grmp_pretrain")
TRAINING_TASKS.register_lazy("grmp-finetune", "clipiq.train.grmp_finetune")
TRAINING_TASKS.register_lazy("rsfiqa", "clipiq.train.rsfiqa")
TRAINING_TASKS.register_lazy("dap-led", "clipiq.train.dap_led")
TRAINING_TASKS.register_lazy("cdasr", "clipiq.train.cdasr")
TRAINING_TASKS.register_lazy("cdasr-meta", "clipiq.train.cdasr_adapt")

__all__ = [
    "TRAINING_TASKS",
    "MetricsLog",
    "Trainer",
    "read_metrics",
    "seed_everything",
    "step_rng",
]
