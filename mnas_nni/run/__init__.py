"""The search's run and life cycle: run a search (`search.run_search`), what its trials share (`context`), what
it records (`records`, `recorder`, `observers`), and how it starts, stops, resumes and guards its run folder
(`preflight`, `stopping`, `resume`, `lock`, `disk_space`, `hydra_files`, `confirm`)."""
