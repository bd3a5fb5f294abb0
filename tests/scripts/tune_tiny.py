"""Calibration tuning of a tiny model on the toy task; run alone or under ``accelerate launch``.

python tests/scripts/tune_tiny.py MODEL_DIR OUT.json PER_PROCESS_BATCH
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for the tests' toy records

from tests.test_tuning import graded  # noqa: E402

from selfknow.confidence.base import Context  # noqa: E402
from selfknow.confidence.lora import CalibrationTuning  # noqa: E402
from selfknow.distributed import process_state  # noqa: E402
from selfknow.models import load_model  # noqa: E402


def main() -> None:
    model_dir, out, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    model, tokenizer = load_model(model_dir, device="cpu")
    context = Context("tiny", model=model, tokenizer=tokenizer, progress=False)
    estimator = CalibrationTuning(top_layers=1, epochs=3, lr=2e-3, batch_size=batch, dropout=0.0)
    fitted = estimator.fit(graded(64, "train"), graded(16, "validation"), context)
    scores = fitted.score(graded(16, "test"), context)
    state = process_state()
    if state.is_main_process:
        training = fitted.config["training"]
        out.write_text(json.dumps({"processes": state.num_processes, **training, "scores": scores.tolist()}))


if __name__ == "__main__":
    main()
