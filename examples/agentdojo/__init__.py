"""AgentDojo's tasks and prompt injections replayed through proctor's decision path.

``suites`` reads AgentDojo (suites, tools, ground truth, where injected content is
seen); ``deployment`` is the one module that uses proctor's parts; ``grants``
reads and drafts the per-task grants; ``replay`` runs the tasks and the attacks;
``report`` adds the figures up. ``bench/efficacy.py`` is the command.
"""
