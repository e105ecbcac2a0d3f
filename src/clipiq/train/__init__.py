"""Training machinery (configs, seeds, checkpoints, resume, logs) and the per-method training tasks."""

from clipiq.train.config import ConfigError, apply_overrides, load_config
from clipiq.train.engine import MetricsLog, Trainer, autocast, read_metrics, seed_everything, step_rng

# name -> "module" providing DEFAULTS and run(cfg, run_dir, device, resume, progress).
TASKS: dict[str, str] = {
    "degradation-clip": "clipiq.train.degradation_clip",
    "clip-dqa": "clipiq.train.clip_dqa",
    "grmp-pretrain": "clipiq.train.grmp_pretrain",
    "grmp-finetune": "clipiq.train.grmp_finetune",
}

__all__ = [
    "TASKS",
    "ConfigError",
    "MetricsLog",
    "Trainer",
    "apply_overrides",
    "autocast",
    "load_config",
    "read_metrics",
    "seed_everything",
    "step_rng",
]
