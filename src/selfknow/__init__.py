"""selfknow: teach language models to know what they don't know.

The few names most users need::

    from selfknow import load_model, load_dataset, answer_dataset, grade_file
"""

from selfknow.answer import AnswerConfig, answer_records
from selfknow.api import answer_dataset, grade_file
from selfknow.data import Record, load_dataset, read_records, write_records
from selfknow.errors import DataError, GradingError, ModelError, SelfknowError
from selfknow.grade import grade_records
from selfknow.judge import Judge, judge_records
from selfknow.models import load_model
from selfknow.prompts import Prompter, PromptStyle

__all__ = [
    "AnswerConfig",
    "DataError",
    "GradingError",
    "Judge",
    "ModelError",
    "Prompter",
    "PromptStyle",
    "Record",
    "SelfknowError",
    "answer_dataset",
    "answer_records",
    "grade_file",
    "grade_records",
    "judge_records",
    "load_dataset",
    "load_model",
    "read_records",
    "write_records",
]
__version__ = "0.1.0"
