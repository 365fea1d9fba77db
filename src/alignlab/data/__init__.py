"""Data: registry (dataset_info.json) -> convert -> templates -> encode -> collate."""

from .collate import FeedbackCollator, PairwiseCollator, SupervisedCollator
from .convert import Example, SkipReport
from .encode import IGNORE_INDEX
from .loader import STAGE_KIND, EncodedData, get_dataset, load_examples
from .registry import DataError
from .templates import TEMPLATES, Template, TemplateError, get_template

__all__ = [
    "IGNORE_INDEX",
    "STAGE_KIND",
    "TEMPLATES",
    "DataError",
    "EncodedData",
    "FeedbackCollator",
    "Example",
    "PairwiseCollator",
    "SkipReport",
    "SupervisedCollator",
    "Template",
    "TemplateError",
    "get_dataset",
    "get_template",
    "load_examples",
]
