"""Feature data: list files, feature files, resampling, modality store, datasets and batching.

Submodules (import what you need; :mod:`pivad.data.datasets` pulls in torch):

- :mod:`.lists` (``read_list``, ``VideoItem``, ``class_names``) and :mod:`.labels` (label rules)
- :mod:`.features` (``load_features``: validated float32 arrays)
- :mod:`.resample` (``resample_snippets``: the field's training resampling, exact)
- :mod:`.modality_store` (``ModalityStore``: ``<root>/<modality>/<video>.npy``)
- :mod:`.datasets` (``TrainSet``, ``TestSet``, ``BalancedLoader``, ``split_train_val``, ``build_datasets``)

Layouts and rules are described in ``docs/data.md``.
"""
