"""The deciding signals: what computes or fits the number a tier compares with its τ.

One home per concept (issue 28). Modules (import them directly; this package re-exports nothing,
so importing one signal never loads scikit-learn or numpy for another):

- :mod:`corea.signals.tokens`: token-probability signals of one completion (``tokprob``, the
  paper's AvgProb; ``answer_prob``, ``min_prob``) and the signal names.
- :mod:`corea.signals.consistency`: self-consistency, the agreement of sampled solutions.
- :mod:`corea.signals.hidden`: hidden-state vectors in run files.
- :mod:`corea.signals.calibrator`: the learned calibrator (logistic / isotonic), versioned and
  shipped.
- :mod:`corea.signals.probe`: linear probes on the SLM's hidden states.
- :mod:`corea.signals.stated`: the stated confidence read as a distribution over its digit
  (the expected confidence and its spread).
- :mod:`corea.signals.base`: the interface of one signal (:class:`~corea.signals.base.Signal`)
  and the inputs a signal can need.
- :mod:`corea.signals.deciders` / :mod:`corea.signals.live`: the signals' offline parts (scored
  and fit on evaluation rows) and live parts (computed from one tier's output).
- :mod:`corea.signals.registry`: **the** registry, one entry per deciding signal, read by the
  live cascade, the held-out report, the signal comparison and the explorer.
"""
