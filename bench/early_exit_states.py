"""Does one prefill give the states a live greedy decode reads every k tokens? Checked on a few items.

    COREA_USE_SHIPPED_ADAPTER=false COREA_SLM__N_THREADS=1 \\
    python bench/early_exit_states.py --run data/generations/gsm8k-test-200 --items 4 \\
        --max-new-tokens 160 --out bench/results/early_exit_states.json

For each of the first ``--items`` rows of a run, the embedded SLM decodes its chat live (greedy,
hidden states on, :meth:`corea.backends.llamacpp.LlamaCppBackend.stream_chat`), and at every
``k``-th token written the state the stream carries (``Chunk.states["end"]``: the state after
the tokens written but the last) is compared with the state one prefill of the chat plus the
decoded text gives at the same completion position (:meth:`~corea.backends.llamacpp.LlamaCppBackend.completion_states`,
what ``corea checkpoints`` stores): cosine similarity per checkpoint. Also reports whether the
live text starts like the committed solution. Nothing is timed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corea.backends import make_backend  # noqa: E402
from corea.config import load_settings  # noqa: E402
from corea.eval.runs import load_results  # noqa: E402
from corea.prompts import slm_messages  # noqa: E402
from corea.types import GenerationParams  # noqa: E402


def live_states(backend, msgs, max_new: int, k: int) -> tuple[str, dict[int, np.ndarray]]:
    """The decoded text and ``{position: state}`` read every ``k`` tokens from the stream."""
    text, written, got, due = "", 0, {}, k
    for ch in backend.stream_chat(msgs, GenerationParams(max_new_tokens=max_new,
                                                         temperature=0.0)):
        text += ch.text
        written += len(ch.logprobs)
        state = (ch.states or {}).get("end")
        if state is not None and ch.text and written - 1 >= due:
            got[written - 1] = np.array(state)
            due = ((written - 1) // k + 1) * k
    return text, got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--items", type=int, default=4)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    settings = load_settings()
    ms = settings.slm.model_copy(update={"hidden_states": True})
    backend = make_backend(ms, settings.cache_dir)
    rows = load_results(args.run)[:args.items]
    items = []
    for r in rows:
        msgs = slm_messages(r["question"], r.get("choices"))
        text, live = live_states(backend, msgs, args.max_new_tokens, args.k)
        pre = backend.completion_states(msgs, text, sorted(live))
        cos = {}
        for t, x in zip(pre.positions, pre.states):
            y = live[t]
            cos[str(t)] = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
        committed = (r.get("slm") or {}).get("text") or ""
        items.append({"id": r["id"], "tokens_written": pre.completion_tokens,
                      "same_text_as_committed": committed.startswith(text.rstrip()),
                      "cosine": cos})
        print(r["id"], json.dumps(cos), "same text:", items[-1]["same_text_as_committed"],
              flush=True)
    allc = [c for it in items for c in it["cosine"].values()]
    out = {"model": settings.slm.name, "k": args.k, "items": items,
           "cosine_min": min(allc) if allc else None,
           "cosine_mean": float(np.mean(allc)) if allc else None,
           "machine_note": "n_threads as configured; shared machine"}
    print(f"{len(allc)} checkpoints: cosine min {out['cosine_min']:.5f}, "
          f"mean {out['cosine_mean']:.5f}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
