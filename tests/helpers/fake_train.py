"""A stand-in for ``python -m train.grpo`` in training-manager tests.

Invoked as ``fake_train.py -m train.grpo --config X --output_dir D [--max_steps N] ...``: logs
one metrics line per step (0.2 s apart), writes ``checkpoint-<step>`` every 2 steps, and on
SIGTERM finishes the step, saves and exits 0, like the real script. ``--fail`` exits 3 after one
step.
"""

import json
import signal
import sys
import time
from pathlib import Path

args = sys.argv[1:]
out = Path(args[args.index("--output_dir") + 1])
steps = int(args[args.index("--max_steps") + 1]) if "--max_steps" in args else 5
stop = False


def handler(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, handler)
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
    if step % 2 == 0 or stop:
        ck = out / f"checkpoint-{step}"
        ck.mkdir(exist_ok=True)
        (ck / "adapter_config.json").write_text("{}")
    if stop:
        print("stopped early", flush=True)
        break
(out / "adapter_config.json").write_text("{}")
print("done", flush=True)
