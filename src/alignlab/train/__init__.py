"""Training stages; `run_train` dispatches to the stage module."""

from .run import run_train

__all__ = ["run_train"]
