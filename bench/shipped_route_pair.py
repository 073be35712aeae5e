"""The shipped defaults' routing pair held out: the prompt probe's τ_r 0.407 and the app's τ 0.7
behind it, on GSM8K test 200, beside answer-first at τ 0.7 and the pair `corea heldout
--route-first` chose on train (τ_r 0.407, τ 0.06). Signals are fit on GSM8K train only (the
router: the prompt probe; answer-first: the default calibrator on token signals); seconds from the
shipped time model; the SLM free. Offline, from the committed rows: nothing is generated or timed.

    python bench/shipped_route_pair.py bench/results/shipped_route_pair.json
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from corea.eval.heldout_signal import gradable  # noqa: E402
from corea.eval.route_first import Policy, outcome, route_items, signal_values  # noqa: E402
from corea.eval.runs import load_results  # noqa: E402
from corea.timing import shipped_time_model  # noqa: E402

TRAIN, TEST = "data/generations/gsm8k-train-1000", "data/generations/gsm8k-test-200"
SLM, LLM_PRICE = "Qwen2.5-Coder-0.5B-Instruct", (0.06, 0.18)  # USD per 1M tokens (the runs')
POLICIES = {"answer_first_tau_0.7": Policy(None, 0.7),
            "shipped_route_0.407_then_tau_0.7": Policy(0.407, 0.7),
            "train_chosen_route_0.407_then_tau_0.06": Policy(0.407, 0.06)}

train = gradable(load_results(TRAIN))
test = {"gsm8k-test": gradable(load_results(TEST))}
v = signal_values(train, test, SLM)
items = route_items(test["gsm8k-test"], v["route"][1]["gsm8k-test"],
                    v["answer"][1]["gsm8k-test"], LLM_PRICE, 0.0, shipped_time_model())
out = {"train": TRAIN, "test": TEST, "slm_price_ratio": 0.0,
       "policies": {k: outcome(items, p) for k, p in POLICIES.items()}}
for k, o in out["policies"].items():
    print(f"{k}: pass@1 {o['pass_at_1']:.3f}, routed {o['routed_rate']:.3f}, "
          f"LLM {o['llm_rate']:.3f}, price {o['cost_fraction_of_llm_only']:.3f}, "
          f"time {o['time_fraction_of_llm_only']:.3f} of LLM-only")
if len(sys.argv) > 1:
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
