"""Model prices, for the cost of a run: a table from a setting, never a guess.

`AGENTEXEC_PRICES` holds the table as JSON, or the path of a JSON file holding it:

```json
{
  "version": "2026-12-01",
  "models": {
    "gpt-4o": {"input": 2.50, "cached_input": 1.25, "output": 10.00},
    "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.60}
  }
}
```

Prices are per million tokens, in one currency (USD by convention). A model missing from the
table counts its tokens and shows no cost. A model name matches its table entry exactly, or
by its dated snapshot (`gpt-4o-2024-08-06` takes `gpt-4o`'s price).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from agentexec.config import get_settings

_SNAPSHOT = re.compile(r"^(?P<base>.+?)-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices per million tokens."""

    input: float
    cached_input: float
    output: float

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """The cost of one call: cached input at its own price, the rest of the input and
        the output (reasoning included, as providers bill it) at theirs."""
        fresh = max(0, input_tokens - cached_tokens)
        total = fresh * self.input + cached_tokens * self.cached_input
        return (total + output_tokens * self.output) / 1_000_000


@dataclass(frozen=True, slots=True)
class PriceTable:
    """The configured prices, with the version every computed cost records."""

    version: str | None
    models: dict[str, Price]

    def price(self, model: str) -> Price | None:
        """The price of `model`, or None when the table does not have it."""
        found = self.models.get(model)
        if found is None and (snapshot := _SNAPSHOT.match(model)):
            found = self.models.get(snapshot["base"])
        return found


def prices() -> PriceTable:
    """The price table of `AGENTEXEC_PRICES` (empty when it is not set).

    Raises:
        ValueError: the setting is not a valid table, or its file cannot be read.
    """
    return _parse(get_settings().prices or "")


@functools.lru_cache(maxsize=4)
def _parse(source: str) -> PriceTable:
    if not source.strip():
        return PriceTable(None, {})
    text = source if source.lstrip().startswith("{") else Path(source).read_text()
    try:
        raw = json.loads(text)
        models = {
            str(name): Price(
                input=float(entry["input"]),
                cached_input=float(entry.get("cached_input", entry["input"])),
                output=float(entry["output"]),
            )
            for name, entry in raw["models"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"AGENTEXEC_PRICES is not a price table ({exc!r}); expected "
            '{"version": "...", "models": {"gpt-4o": {"input": 2.5, "cached_input": 1.25, '
            '"output": 10.0}}}'
        ) from exc
    for name, price in models.items():
        if min(price.input, price.cached_input, price.output) < 0:
            raise ValueError(f"AGENTEXEC_PRICES: negative price for {name!r}")
    version = raw.get("version")
    return PriceTable(str(version) if version is not None else None, models)
