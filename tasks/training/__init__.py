"""Fine-tuning a student on a dataset (``reflectory train``): the settings and the examples, pure.

The training itself (trl's ``SFTTrainer``, LoRA through peft) is ``infra.training``; the dataset
sources and the ``trainings`` table are ``storage.trainings`` (docs/evaluate.md).
"""
