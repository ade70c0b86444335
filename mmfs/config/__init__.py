"""Configuration, declared once and imported without torch: the network (`model`), how options are declared
(`options`), and every training option (`train`). The inference commands' requests live beside them."""

from __future__ import annotations

from mmfs.config.model import PRESETS, ModelConfig, get_preset

__all__ = ["PRESETS", "ModelConfig", "get_preset"]
