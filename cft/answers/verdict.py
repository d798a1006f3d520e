"""The verdict of one answer check."""
from enum import Enum


class Verdict(str, Enum):
    EQUAL = "equal"
    DIFFERENT = "different"
    TIMEOUT = "timeout"      # too costly to decide: the Grader's hard timeout, or a structural guard
    UNPARSABLE = "unparsable"

    def __str__(self) -> str:
        return self.value
