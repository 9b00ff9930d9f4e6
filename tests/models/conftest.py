"""Fixtures shared by the model tests."""
import re

import pytest


def _dot_operand_dtypes(hlo_text: str) -> list[tuple[str, str]]:
  """(lhs, rhs) element types of every dot in an optimized HLO module's text."""
  types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo_text))
  dots = re.findall(r" dot\(%([\w.\-]+), %([\w.\-]+)\)", hlo_text)
  return [(types[a], types[b]) for a, b in dots]


@pytest.fixture
def dot_operand_dtypes():
  """The element types each dot of a compiled module multiplies: whether XLA kept a low-precision
  GEMM in low precision or upcast it (XLA:CPU does so silently when it cannot use its bf16 kernel).
  """
  return _dot_operand_dtypes
