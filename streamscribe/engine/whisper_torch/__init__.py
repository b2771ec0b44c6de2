"""Whisper on PyTorch: the backend for GPUs that CTranslate2's CUDA 12 wheels cannot use.

`ct2_reader` reads the CTranslate2 model files we ship, `weights` maps them (or a Hugging Face
checkpoint) onto `network`, a compact Whisper with a static key/value cache; `search` decodes
with CUDA graphs on a GPU; `align` times the words; `transcriber` serves `DecodeRequest`s like the
CTranslate2 backend. Only `ct2_reader` is importable without torch. What both backends do alike to
a decoded hypothesis (word clean-up, language stickiness, guards) is `engine/whisper_rules.py`'s.
"""
