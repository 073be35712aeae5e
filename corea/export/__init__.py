"""Rated interactions leaving the log: the dataset rows and card (:mod:`.records`, pure) and the
scheduled push of them to a Hugging Face dataset repository (:mod:`.hub`)."""
