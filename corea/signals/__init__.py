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
- :mod:`corea.signals.deciders`: every deciding signal as a plug-in of one interface, scored
  offline on evaluation rows (``corea heldout``, the explorer).
"""
