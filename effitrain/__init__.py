"""effitrain: measure what speeds up the training of Transformer language models.

    import effitrain as et
    cfg = et.profile_config("smoke")           # or "cpu", "gpu"; EFFITRAIN_PROFILE picks the default
    run = et.train(cfg)                        # a Run: history, model, summary(); kept in the run cache
    run = et.cached_train(cfg)                 # the same, but an identical call loads it from disk
    et.time_to_target(run.history, val_loss=6.0)
    et.evaluate_downstream(run.model, et.downstream_task("sotu-era", data), method="probe")   # accuracy ± 95%
"""
import datasets as _datasets

from effitrain.version import __version__
from effitrain.config import Budget, Config, ConfigError, PROFILES, PRESETS, default_profile, profile_config, profile_size
from effitrain.data import CorpusError, corpus_names, prepare_data
from effitrain.techniques import Technique, get as technique, register, registered
from effitrain.train import CheckpointError, History, Run, Trainer, measure_peak_flops, time_to_target
from effitrain.train.runcache import cached_train, train
from effitrain.train.finetune import DownstreamResult, downstream_table, evaluate_downstream, random_init_floor
from effitrain.data.downstream import downstream_task
from effitrain.recipes import ingredients, recipe, recipe_card

_datasets.disable_progress_bars()  # our own progress bar says what matters

__all__ = ["Budget", "Config", "ConfigError", "PROFILES", "PRESETS", "default_profile", "profile_config", "profile_size",
           "CorpusError", "corpus_names", "prepare_data", "Technique", "technique", "register", "registered",
           "CheckpointError", "History", "Run", "Trainer", "measure_peak_flops", "time_to_target", "train",
           "cached_train", "DownstreamResult", "downstream_table", "downstream_task", "evaluate_downstream", "random_init_floor",
           "ingredients", "recipe", "recipe_card"]
