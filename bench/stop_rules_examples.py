"""The Ask tab's two examples asked with a fresh clone's shipped defaults (the embedded SLM with its
calibration adapter, the shipped calibrator, τ 0.7): per example the SLM's completion tokens,
answer, deciding signal and number, and kept or deferred. Token counts only; nothing is timed.

    COREA_SLM__N_THREADS=1 COREA_LLM__N_THREADS=1 python bench/stop_rules_examples.py OUT.json
"""
import json, os, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for k in ("COREA_CONFIG","COREA_THRESHOLD","COREA_CONFIDENCE_SOURCE","COREA_USE_SHIPPED_SIGNALS","COREA_USE_SHIPPED_ADAPTER"):
    os.environ.pop(k, None)
from corea.config import Settings
from corea.events import Final
from corea.service import CoreaService
from corea.ui.ask import EXAMPLES
db = tempfile.mktemp(suffix=".sqlite")
svc = CoreaService(Settings(db_url=f"sqlite:///{db}"))
out = []
for (q,) in EXAMPLES:
    ev = list(svc.ask(q, session_id="x"))
    r = ev[-1].result; d = r.decision
    row = dict(question=q, slm_text=r.slm.text, slm_completion_tokens=r.slm.completion_tokens,
               finish=r.slm.finish_reason, answer=r.slm.answer, confidence=r.slm.confidence,
               method=r.slm.confidence_method, signals=r.slm.signals, decision_conf=d.confidence,
               signal=d.signal, defer=d.defer, final=r.final_model)
    out.append(row); print(json.dumps(row, indent=1), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
