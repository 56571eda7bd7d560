"""Quality gates: a YAML file of per-tokenizer bounds, checked against the mean metrics of a run.

```yaml
taef2_512:
  psnr_min: 28.0     # mean per-image PSNR must be >= 28.0 dB
  lpips_max: 0.10    # mean LPIPS must be <= 0.10
  fid_max: 20        # dataset-level metrics work too
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Gate:
    tokenizer: str
    metric: str
    bound: float
    kind: str  # "min" or "max"

    @property
    def key(self) -> str:
        return f"{self.metric}_{self.kind}"

    def check(self, value: float) -> str | None:
        """None if `value` passes, else the failure message naming tokenizer, metric, value and bound."""
        # NaN (nothing measured) never passes; +inf (a perfect copy's PSNR) passes a floor, -inf nothing
        ok = not math.isnan(value) and (value >= self.bound if self.kind == "min" else value <= self.bound)
        if ok:
            return None
        relation = ">=" if self.kind == "min" else "<="
        return (f"{self.tokenizer}: {self.metric} = {value:.4g} violates {self.key} "
                f"(must be {relation} {self.bound:g})")


def load_gates(path: str | Path) -> dict[str, list[Gate]]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--thresholds {path}: cannot read ({exc}); pass a YAML file of "
                         "tokenizer: {metric_min: x}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--thresholds {path}: expected a mapping of tokenizer name -> bounds")
    gates: dict[str, list[Gate]] = {}
    for tokenizer, bounds in data.items():
        if not isinstance(bounds, dict):
            raise ValueError(f"--thresholds {path}: {tokenizer} must map to bounds like {{psnr_min: 25}}")
        for key, bound in bounds.items():
            metric, _, kind = str(key).rpartition("_")
            if kind not in ("min", "max") or not metric:
                raise ValueError(f"--thresholds {path}: {tokenizer}.{key} must be <metric>_min or <metric>_max")
            gates.setdefault(str(tokenizer), []).append(Gate(str(tokenizer), metric, float(bound), kind))
    return gates
