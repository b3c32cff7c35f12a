"""Clear errors for config keys that no component understands."""

import difflib
from typing import Iterable, Mapping


def check_known_keys(given: Mapping, valid: Iterable[str], where: str) -> None:
  """Raises ValueError naming each unknown key of `given` and its closest valid ones."""
  valid = sorted(valid)
  problems = []
  for key in given:
    if key not in valid:
      close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
      hint = f"did you mean {', '.join(close)}?" if close else "no close match"
      problems.append(f"{where}.{key} ({hint})")
  if problems:
    raise ValueError("unknown config key(s): " + "; ".join(problems)
                     + f". Valid keys of {where}: {', '.join(valid)}")
