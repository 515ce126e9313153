"""Tasks, deterministic local training, aggregation rules.

Import from the modules: :mod:`allmende.learn.task` (Task API, ``load_task``),
:mod:`allmende.learn.train` (``train_local``, ``derive_seed``), :mod:`allmende.learn.aggregate`
(``aggregate``, ``check_update``), :mod:`allmende.learn.partition`, and the built-in task
:mod:`allmende.learn.digits`. Nothing is re-exported here, so that ``allmende.learn.aggregate``
always names the module, and importing the package stays cheap.
"""
