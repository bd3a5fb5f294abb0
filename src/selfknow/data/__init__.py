"""Records, their JSONL storage, and the dataset sources that produce them."""

from selfknow.data.records import Record, read_records, write_records
from selfknow.data.registry import SOURCES, load_dataset

__all__ = ["SOURCES", "Record", "load_dataset", "read_records", "write_records"]
