"""A stand-in for ``python -m train.grpo`` in training-manager tests.

Invoked as ``fake_train.py -m train.grpo --config X --output_dir D [--max_steps N] ...``: logs
one metrics line per step (0.2 s apart), writes ``checkpoint-<step>`` every 2 steps. Its signal
handling is the real script's (``train.grpo.install_stop_handlers``): on SIGTERM or SIGINT it
finishes the step, saves and exits with ``train.grpo.stop_exit_code()`` (128 + the signal).
``--fail`` exits 3 after one step.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's train package

from train.grpo import install_stop_handlers, stop_exit_code  # noqa: E402

args = sys.argv[1:]
out = Path(args[args.index("--output_dir") + 1])
steps = int(args[args.index("--max_steps") + 1]) if "--max_steps" in args else 5


class Stop:  # what train.grpo's StopOnSignal callback reads
    requested = False


install_stop_handlers(Stop)
out.mkdir(parents=True, exist_ok=True)
print("fake training starting", flush=True)
for step in range(1, steps + 1):
    time.sleep(0.2)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "reward": 0.1 * step, "calibration/accuracy": 0.5,
                            "calibration/mean_confidence": 0.9 - 0.05 * step,
                            "calibration/ece": 0.4 - 0.03 * step,
                            "rewards/correctness/mean": 0.5}) + "\n")
    print(f"step {step}", flush=True)
    if "--fail" in args:
        print("Traceback: boom", flush=True)
        sys.exit(3)
    if step % 2 == 0 or Stop.requested:
        ck = out / f"checkpoint-{step}"
        ck.mkdir(exist_ok=True)
        (ck / "adapter_config.json").write_text("{}")
    if Stop.requested:
        print("stopped early", flush=True)
        break
(out / "adapter_config.json").write_text("{}")
print("done", flush=True)
sys.exit(stop_exit_code())
